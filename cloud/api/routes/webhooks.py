"""Webhook subscriptions and deliveries: ``/webhooks/subscriptions`` and
``/webhooks/deliveries``.

Property managers' tools subscribe here, rotate their secrets, see dead letters
(``GET /webhooks/deliveries?status=dead``) and replay them. A URL is checked against
the SSRF policy (``ANJU_WEBHOOK_ALLOW_PRIVATE``, ``ANJU_WEBHOOK_ALLOWED_NETWORKS``) when
it is subscribed or enabled: a refused URL answers 422 with the reason. So does a
filter naming an event type, incident type or priority that does not exist (the
incident types are those of the rules the app was created with), listing the valid
names. There is no authentication yet; API keys with roles and scopes come later.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, status

from cloud.api.deps import ConnectionDep
from cloud.api.models import (
    WebhookDelivery,
    WebhookDisableRequest,
    WebhookReplay,
    WebhookSecret,
    WebhookSecretsRetired,
    WebhookSubscription,
    WebhookSubscriptionCreated,
    WebhookSubscriptionDisabled,
    WebhookSubscriptionRequest,
)
from cloud.incidents import Priority
from cloud.rules.config import RuleSet
from cloud.settings import CloudSettings
from cloud.webhooks import subscriptions
from cloud.webhooks.errors import (
    CommunityNotFound,
    DeliveryNotFound,
    InvalidFilter,
    ReplayRefused,
    SubscriptionNotFound,
    UnsafeUrl,
)
from cloud.webhooks.filters import FilterVocabulary
from cloud.webhooks.ssrf import AddressPolicy

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    status.HTTP_404_NOT_FOUND: {"description": "No subscription or delivery with this id"}
}


def get_address_policy(request: Request) -> AddressPolicy:
    """The SSRF policy of the app's settings."""
    return AddressPolicy.from_settings(cast(CloudSettings, request.app.state.settings).webhooks)


PolicyDep = Annotated[AddressPolicy, Depends(get_address_policy)]


def filter_vocabulary(rules: RuleSet) -> FilterVocabulary:
    """The names subscription filters may hold in a cloud running ``rules``."""
    return FilterVocabulary(
        incident_types=rules.incident_types,
        priorities=frozenset(int(priority) for priority in Priority),
    )


def get_filter_vocabulary(request: Request) -> FilterVocabulary:
    """The vocabulary ``create_app`` built from the rules it loaded."""
    return cast(FilterVocabulary, request.app.state.filter_vocabulary)


VocabularyDep = Annotated[FilterVocabulary, Depends(get_filter_vocabulary)]


@contextmanager
def _refusals() -> Iterator[None]:
    """The webhook package's refusals as HTTP answers."""
    try:
        yield
    except (SubscriptionNotFound, DeliveryNotFound) as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from None
    except (UnsafeUrl, CommunityNotFound, InvalidFilter) as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc)) from None
    except ReplayRefused as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from None


def _subscription(found: subscriptions.Subscription) -> WebhookSubscription:
    return WebhookSubscription.model_validate(found, from_attributes=True)


@router.get("/subscriptions", response_model=list[WebhookSubscription])
async def list_subscriptions(
    conn: ConnectionDep,
    status_filter: Annotated[Literal["active", "disabled"] | None, Query(alias="status")] = None,
) -> list[WebhookSubscription]:
    """Every subscription (of one status when asked), oldest first; secrets only counted."""
    found = await subscriptions.list_subscriptions(conn, status=status_filter)
    return [_subscription(item) for item in found]


@router.post(
    "/subscriptions",
    response_model=WebhookSubscriptionCreated,
    status_code=status.HTTP_201_CREATED,
    responses={
        status.HTTP_422_UNPROCESSABLE_CONTENT: {
            "description": "The URL is refused (scheme, DNS, or a non-public address), "
            "the community is unknown, or a filter names an event type, incident type "
            "or priority that does not exist (the answer lists the valid ones)"
        }
    },
)
async def create_subscription(
    conn: ConnectionDep,
    policy: PolicyDep,
    vocabulary: VocabularyDep,
    body: WebhookSubscriptionRequest,
) -> WebhookSubscriptionCreated:
    """Subscribe a URL; the answer holds the signing secret, which is never shown again."""
    with _refusals():
        created, secret = await subscriptions.create_subscription(
            conn,
            community=body.community,
            tier=body.tier,
            url=body.url,
            policy=policy,
            description=body.description,
            event_types=body.event_types,
            incident_types=body.incident_types,
            max_priority=body.max_priority,
            vocabulary=vocabulary,
        )
    return WebhookSubscriptionCreated.model_validate(
        {**_subscription(created).model_dump(), "secret": secret}
    )


@router.get(
    "/subscriptions/{subscription_id}", response_model=WebhookSubscription, responses=_NOT_FOUND
)
async def get_subscription(conn: ConnectionDep, subscription_id: int) -> WebhookSubscription:
    with _refusals():
        return _subscription(await subscriptions.get_subscription(conn, subscription_id))


@router.post(
    "/subscriptions/{subscription_id}/disable",
    response_model=WebhookSubscriptionDisabled,
    responses=_NOT_FOUND,
)
async def disable_subscription(
    conn: ConnectionDep,
    subscription_id: int,
    body: Annotated[WebhookDisableRequest | None, Body()] = None,
) -> WebhookSubscriptionDisabled:
    """Stop sending; pending deliveries become dead letters, replayable after enabling."""
    reason = (body or WebhookDisableRequest()).reason
    with _refusals():
        dead = await subscriptions.disable_subscription(conn, subscription_id, reason=reason)
        found = await subscriptions.get_subscription(conn, subscription_id)
    return WebhookSubscriptionDisabled(subscription=_subscription(found), dead_lettered=dead)


@router.post(
    "/subscriptions/{subscription_id}/enable",
    response_model=WebhookSubscription,
    responses=_NOT_FOUND,
)
async def enable_subscription(
    conn: ConnectionDep, policy: PolicyDep, subscription_id: int
) -> WebhookSubscription:
    """Send again (after a 410 or an operator's disable); its URL is checked again."""
    with _refusals():
        return _subscription(
            await subscriptions.enable_subscription(conn, subscription_id, policy=policy)
        )


@router.post(
    "/subscriptions/{subscription_id}/secrets",
    response_model=WebhookSecret,
    status_code=status.HTTP_201_CREATED,
    responses=_NOT_FOUND,
)
async def rotate_secret(conn: ConnectionDep, subscription_id: int) -> WebhookSecret:
    """Add a signing secret, keeping the previous ones (up to three in all): each
    delivery carries one signature per secret until the old ones are retired."""
    with _refusals():
        secret = await subscriptions.rotate_secret(conn, subscription_id)
    return WebhookSecret(subscription_id=subscription_id, secret=secret)


@router.delete(
    "/subscriptions/{subscription_id}/secrets/previous",
    response_model=WebhookSecretsRetired,
    responses=_NOT_FOUND,
)
async def retire_previous_secrets(
    conn: ConnectionDep, subscription_id: int
) -> WebhookSecretsRetired:
    """End a rotation: sign with the newest secret only."""
    with _refusals():
        retired = await subscriptions.retire_old_secrets(conn, subscription_id)
    return WebhookSecretsRetired(subscription_id=subscription_id, retired=retired)


@router.post(
    "/subscriptions/{subscription_id}/replay",
    response_model=WebhookReplay,
    responses={**_NOT_FOUND, status.HTTP_409_CONFLICT: {"description": "Subscription disabled"}},
)
async def replay_subscription(
    conn: ConnectionDep,
    subscription_id: int,
    since: Annotated[datetime | None, Query()] = None,
) -> WebhookReplay:
    """Every dead letter of the subscription (created at or after ``since``) is due
    again now, with fresh attempts and its own ``webhook-id``."""
    with _refusals():
        count = await subscriptions.replay_dead_letters(conn, subscription_id, since=since)
    return WebhookReplay(replayed=count)


@router.get("/deliveries", response_model=list[WebhookDelivery])
async def list_deliveries(
    conn: ConnectionDep,
    status_filter: Annotated[
        Literal["pending", "delivered", "dead"] | None, Query(alias="status")
    ] = None,
    subscription_id: int | None = None,
    before_id: int | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[WebhookDelivery]:
    """Deliveries newest first; ``?status=dead`` lists the dead letters. For the next
    page pass the last ``id`` as ``before_id``."""
    found = await subscriptions.list_deliveries(
        conn,
        status=status_filter,
        subscription_id=subscription_id,
        before_id=before_id,
        limit=limit,
    )
    return [WebhookDelivery.model_validate(item, from_attributes=True) for item in found]


@router.post(
    "/deliveries/{delivery_id}/replay",
    response_model=WebhookReplay,
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        **_NOT_FOUND,
        status.HTTP_409_CONFLICT: {
            "description": "Pending already, or its subscription is disabled"
        },
    },
)
async def replay_delivery(conn: ConnectionDep, delivery_id: int) -> WebhookReplay:
    """A dead (or delivered) delivery is due again now, with fresh attempts and the
    same ``webhook-id``."""
    with _refusals():
        await subscriptions.replay_delivery(conn, delivery_id)
    return WebhookReplay(replayed=1)
