"""Errors of the webhook package, each naming the subscription, delivery or URL concerned.

    CloudError
    └── WebhookError                 a webhook operation was refused
        ├── UnsafeUrl                    a URL is not http(s), does not resolve, or
        │                                resolves to an address the SSRF policy refuses
        ├── InvalidSecret                a secret is not ``whsec_`` + base64 of 24-64 bytes
        ├── InvalidFilter                a subscription filter names an event type,
        │                                incident type or priority that does not exist
        ├── SubscriptionNotFound         no subscription with this id in the scope
        ├── DeliveryNotFound             no delivery with this id in the scope
        ├── CommunityNotFound            no node of the community tree with this id
        │                                in the scope
        ├── CommunityRetired             the node is retired: no new subscriptions
        └── ReplayRefused                the delivery is pending already, or its
                                         subscription is disabled

A subscription or delivery outside the caller's scope is not found, exactly like one
that does not exist, so its existence is not disclosed.

Failed sends are not errors: they are outcomes recorded on the delivery row.
"""

from __future__ import annotations

from cloud.errors import CloudError


class WebhookError(CloudError):
    """Base of the errors raised by ``cloud.webhooks``."""


class UnsafeUrl(WebhookError):
    """``url`` may not be called: ``reason`` says why (a scheme, DNS, or an address)."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"webhook URL {url!r} refused: {reason}")


class InvalidSecret(WebhookError):
    """A signing secret is malformed; the message never contains the secret itself."""


class InvalidFilter(WebhookError):
    """Filter ``field`` holds a name that never matches (``problem``); ``valid`` lists
    the names it may hold, so the message alone is enough to fix the request."""

    def __init__(self, field: str, problem: str, valid: str) -> None:
        self.field = field
        self.problem = problem
        self.valid = valid
        super().__init__(f"{field}: {problem}; valid: {valid}")


class SubscriptionNotFound(WebhookError):
    def __init__(self, subscription_id: int) -> None:
        self.subscription_id = subscription_id
        super().__init__(f"no webhook subscription {subscription_id}")


class DeliveryNotFound(WebhookError):
    def __init__(self, delivery_id: int) -> None:
        self.delivery_id = delivery_id
        super().__init__(f"no webhook delivery {delivery_id}")


class CommunityNotFound(WebhookError):
    def __init__(self, community_id: int) -> None:
        self.community_id = community_id
        super().__init__(f"no node {community_id} in the community tree")


class CommunityRetired(WebhookError):
    """A retired node keeps its subscriptions but takes no new ones."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"{path!r} is retired: it takes no new subscriptions")


class ReplayRefused(WebhookError):
    """``subject`` (a delivery or a subscription's dead letters) cannot be replayed now."""

    def __init__(self, subject: str, reason: str) -> None:
        self.subject = subject
        self.reason = reason
        super().__init__(f"{subject} cannot be replayed: {reason}")
