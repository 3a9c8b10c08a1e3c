"""Webhook subscriptions and deliveries: ``/webhooks/subscriptions`` and
``/webhooks/deliveries``, within the key's scope.

Property managers' tools subscribe here, rotate their secrets, see dead letters
(``GET /webhooks/deliveries?status=dead``) and replay them. Every route needs
``webhooks:manage`` and sees only the subscriptions of nodes its key reaches (and
their deliveries): another community's subscription or delivery answers 404, as one
that does not exist, and a subscription may name only a node the key reaches.

A URL is checked against the SSRF policy (``ANJU_WEBHOOK_ALLOW_PRIVATE``,
``ANJU_WEBHOOK_ALLOWED_NETWORKS``) when it is subscribed or enabled: a refused URL
answers 422 with the reason. So does a filter naming an event type, incident type or
priority that does not exist (the incident types are those of the rules the app was
created with), listing the valid names.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request

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
from cloud.api.pagination import CursorQuery, Page, decode_id, id_page
from cloud.api.params import MAX_ID, IdPath, Instant, Limit
from cloud.api.problems import problem_response
from cloud.api.scoping import CommunityQuery, TierQuery, reachable_node, scope_within
from cloud.api.security import allowed
from cloud.auth.principal import Principal
from cloud.auth.roles import Permission
from cloud.incidents import Priority
from cloud.rules.config import RuleSet
from cloud.settings import CloudSettings
from cloud.webhooks import subscriptions
from cloud.webhooks.errors import (
    CommunityNotFound,
    CommunityRetired,
    DeliveryNotFound,
    InvalidFilter,
    ReplayRefused,
    SubscriptionNotFound,
    UnsafeUrl,
)
from cloud.webhooks.filters import FilterVocabulary
from cloud.webhooks.ssrf import AddressPolicy

router = APIRouter(prefix="/webhooks", tags=["webhooks"])

Manager = Annotated[Principal, allowed(Permission.WEBHOOKS_MANAGE)]
Responses = dict[int | str, dict[str, Any]]

_NODE_NOT_FOUND: Responses = {HTTPStatus.NOT_FOUND.value: problem_response("No such node in reach")}
_SUBSCRIPTION_NOT_FOUND: Responses = {
    HTTPStatus.NOT_FOUND.value: problem_response("No subscription with this id in reach")
}
_DELIVERY_NOT_FOUND: Responses = {
    HTTPStatus.NOT_FOUND.value: problem_response("No delivery with this id in reach")
}
_URL_REFUSED: Responses = {
    HTTPStatus.UNPROCESSABLE_ENTITY.value: problem_response(
        "The URL is refused (scheme, DNS, or a non-public address)"
    )
}

SubscriptionIdQuery = Annotated[
    int | None,
    Query(ge=1, le=MAX_ID, description="Only the deliveries of this subscription"),
]


async def get_address_policy(request: Request) -> AddressPolicy:
    """The SSRF policy of the app's settings."""
    return AddressPolicy.from_settings(cast(CloudSettings, request.app.state.settings).webhooks)


PolicyDep = Annotated[AddressPolicy, Depends(get_address_policy)]


def filter_vocabulary(rules: RuleSet) -> FilterVocabulary:
    """The names subscription filters may hold in a cloud running ``rules``."""
    return FilterVocabulary(
        incident_types=rules.incident_types,
        priorities=frozenset(int(priority) for priority in Priority),
    )


async def get_filter_vocabulary(request: Request) -> FilterVocabulary:
    """The vocabulary ``create_app`` built from the rules it loaded."""
    return cast(FilterVocabulary, request.app.state.filter_vocabulary)


VocabularyDep = Annotated[FilterVocabulary, Depends(get_filter_vocabulary)]


@contextmanager
def _refusals() -> Iterator[None]:
    """The webhook package's refusals as HTTP answers."""
    try:
        yield
    except (SubscriptionNotFound, DeliveryNotFound, CommunityNotFound) as exc:
        raise HTTPException(HTTPStatus.NOT_FOUND, str(exc)) from None
    except (UnsafeUrl, InvalidFilter) as exc:
        raise HTTPException(HTTPStatus.UNPROCESSABLE_ENTITY, str(exc)) from None
    except (ReplayRefused, CommunityRetired) as exc:
        raise HTTPException(HTTPStatus.CONFLICT, str(exc)) from None


def _subscription(found: subscriptions.Subscription) -> WebhookSubscription:
    return WebhookSubscription.model_validate(found, from_attributes=True)


@router.get("/subscriptions", response_model=Page[WebhookSubscription], responses=_NODE_NOT_FOUND)
async def list_subscriptions(
    conn: ConnectionDep,
    principal: Manager,
    status_filter: Annotated[Literal["active", "disabled"] | None, Query(alias="status")] = None,
    community: CommunityQuery = None,
    tier: TierQuery = None,
    limit: Limit = 100,
    cursor: CursorQuery = None,
) -> Page[WebhookSubscription]:
    """Subscriptions of the nodes the key reaches (of ``community``'s subtree, and of
    one status, when asked), oldest first; secrets only counted."""
    after = decode_id(cursor)
    scope = await scope_within(conn, principal, community, tier)
    found = await subscriptions.list_subscriptions(
        conn,
        scope=scope,
        status=status_filter,
        after=after,
        limit=limit + 1,
    )
    items = [_subscription(item) for item in found]
    return id_page(items, limit)


@router.post(
    "/subscriptions",
    response_model=WebhookSubscriptionCreated,
    status_code=HTTPStatus.CREATED,
    responses={
        **_NODE_NOT_FOUND,
        HTTPStatus.CONFLICT.value: problem_response(
            "The node is retired and takes no new subscriptions"
        ),
        HTTPStatus.UNPROCESSABLE_ENTITY.value: problem_response(
            "The URL is refused (scheme, DNS, or a non-public address), the path names both "
            "a city and a street (give the tier), or a filter names an event type, incident "
            "type or priority that does not exist (the answer lists the valid ones)"
        ),
    },
)
async def create_subscription(
    conn: ConnectionDep,
    principal: Manager,
    policy: PolicyDep,
    vocabulary: VocabularyDep,
    body: WebhookSubscriptionRequest,
) -> WebhookSubscriptionCreated:
    """Subscribe a URL to a node the key reaches (an unknown node and one out of reach
    both answer 404); the answer holds the signing secret, which is never shown again."""
    community_id = await reachable_node(conn, principal, body.community, body.tier)
    with _refusals():
        created, secret = await subscriptions.create_subscription(
            conn,
            community_id=community_id,
            url=body.url,
            policy=policy,
            vocabulary=vocabulary,
            scope=principal.scope,
            description=body.description,
            event_types=body.event_types,
            incident_types=body.incident_types,
            max_priority=body.max_priority,
        )
    return WebhookSubscriptionCreated.model_validate(
        {**_subscription(created).model_dump(), "secret": secret}
    )


@router.get(
    "/subscriptions/{subscription_id}",
    response_model=WebhookSubscription,
    responses=_SUBSCRIPTION_NOT_FOUND,
)
async def get_subscription(
    conn: ConnectionDep, principal: Manager, subscription_id: IdPath
) -> WebhookSubscription:
    with _refusals():
        found = await subscriptions.get_subscription(conn, subscription_id, scope=principal.scope)
    return _subscription(found)


@router.post(
    "/subscriptions/{subscription_id}/disable",
    response_model=WebhookSubscriptionDisabled,
    responses=_SUBSCRIPTION_NOT_FOUND,
)
async def disable_subscription(
    conn: ConnectionDep,
    principal: Manager,
    subscription_id: IdPath,
    body: Annotated[WebhookDisableRequest | None, Body()] = None,
) -> WebhookSubscriptionDisabled:
    """Stop sending; pending deliveries become dead letters, replayable after enabling."""
    reason = (body or WebhookDisableRequest()).reason
    with _refusals():
        dead = await subscriptions.disable_subscription(
            conn, subscription_id, reason=reason, scope=principal.scope
        )
        found = await subscriptions.get_subscription(conn, subscription_id, scope=principal.scope)
    return WebhookSubscriptionDisabled(subscription=_subscription(found), dead_lettered=dead)


@router.post(
    "/subscriptions/{subscription_id}/enable",
    response_model=WebhookSubscription,
    responses={**_SUBSCRIPTION_NOT_FOUND, **_URL_REFUSED},
)
async def enable_subscription(
    conn: ConnectionDep, principal: Manager, policy: PolicyDep, subscription_id: IdPath
) -> WebhookSubscription:
    """Send again (after a 410 or an operator's disable); its URL is checked again."""
    with _refusals():
        found = await subscriptions.enable_subscription(
            conn, subscription_id, policy=policy, scope=principal.scope
        )
    return _subscription(found)


@router.post(
    "/subscriptions/{subscription_id}/secrets",
    response_model=WebhookSecret,
    status_code=HTTPStatus.CREATED,
    responses=_SUBSCRIPTION_NOT_FOUND,
)
async def rotate_secret(
    conn: ConnectionDep, principal: Manager, subscription_id: IdPath
) -> WebhookSecret:
    """Add a signing secret, keeping the previous ones (up to three in all): each
    delivery carries one signature per secret until the old ones are retired."""
    with _refusals():
        secret = await subscriptions.rotate_secret(conn, subscription_id, scope=principal.scope)
    return WebhookSecret(subscription_id=subscription_id, secret=secret)


@router.delete(
    "/subscriptions/{subscription_id}/secrets/previous",
    response_model=WebhookSecretsRetired,
    responses=_SUBSCRIPTION_NOT_FOUND,
)
async def retire_previous_secrets(
    conn: ConnectionDep, principal: Manager, subscription_id: IdPath
) -> WebhookSecretsRetired:
    """End a rotation: sign with the newest secret only."""
    with _refusals():
        retired = await subscriptions.retire_old_secrets(
            conn, subscription_id, scope=principal.scope
        )
    return WebhookSecretsRetired(subscription_id=subscription_id, retired=retired)


@router.post(
    "/subscriptions/{subscription_id}/replay",
    response_model=WebhookReplay,
    responses={
        **_SUBSCRIPTION_NOT_FOUND,
        HTTPStatus.CONFLICT.value: problem_response("The subscription is disabled"),
    },
)
async def replay_subscription(
    conn: ConnectionDep,
    principal: Manager,
    subscription_id: IdPath,
    since: Instant | None = None,
) -> WebhookReplay:
    """Every dead letter of the subscription (created at or after ``since``) is due
    again now, with fresh attempts and its own ``webhook-id``."""
    with _refusals():
        count = await subscriptions.replay_dead_letters(
            conn, subscription_id, scope=principal.scope, since=since
        )
    return WebhookReplay(replayed=count)


@router.get("/deliveries", response_model=Page[WebhookDelivery], responses=_NODE_NOT_FOUND)
async def list_deliveries(
    conn: ConnectionDep,
    principal: Manager,
    status_filter: Annotated[
        Literal["pending", "delivered", "dead"] | None, Query(alias="status")
    ] = None,
    subscription_id: SubscriptionIdQuery = None,
    community: CommunityQuery = None,
    tier: TierQuery = None,
    limit: Limit = 100,
    cursor: CursorQuery = None,
) -> Page[WebhookDelivery]:
    """Deliveries of the subscriptions the key reaches (of ``community``'s subtree when
    asked), newest first; ``?status=dead`` lists the dead letters."""
    before = decode_id(cursor)
    scope = await scope_within(conn, principal, community, tier)
    found = await subscriptions.list_deliveries(
        conn,
        scope=scope,
        status=status_filter,
        subscription_id=subscription_id,
        before=before,
        limit=limit + 1,
    )
    items = [WebhookDelivery.model_validate(item, from_attributes=True) for item in found]
    return id_page(items, limit)


@router.post(
    "/deliveries/{delivery_id}/replay",
    response_model=WebhookReplay,
    status_code=HTTPStatus.ACCEPTED,
    responses={
        **_DELIVERY_NOT_FOUND,
        HTTPStatus.CONFLICT.value: problem_response(
            "Pending already, or its subscription is disabled"
        ),
    },
)
async def replay_delivery(
    conn: ConnectionDep, principal: Manager, delivery_id: IdPath
) -> WebhookReplay:
    """A dead (or delivered) delivery is due again now, with fresh attempts and the
    same ``webhook-id``."""
    with _refusals():
        await subscriptions.replay_delivery(conn, delivery_id, scope=principal.scope)
    return WebhookReplay(replayed=1)
