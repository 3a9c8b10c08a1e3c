"""What the API returns: response models, separate from the storage rows they are read from."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from cloud.api.params import NO_NUL, WORDS
from cloud.incidents import Priority
from cloud.queue.states import IncidentStatus, Outcome
from cloud.webhooks.outbox import WebhookEvent
from schemas.vocabulary import Metric
from schemas.wire import NODE_PATH_PATTERN

Bucket = Literal["raw", "1m", "1h", "1d"]


class _Response(BaseModel):
    model_config = ConfigDict(frozen=True)


class IncidentSummary(_Response):
    """One incident as the dispatch queue lists it."""

    id: int
    type: str
    priority: int
    status: IncidentStatus
    community: str
    """The community path, ``street/community``."""
    building: str | None
    unit: str | None
    device_id: str | None
    opened_at: datetime
    updated_at: datetime
    event_count: int
    first_event_ts: datetime | None
    """When the event that opened the incident happened (device or gateway time)."""
    claimed_by: str | None = None
    claimed_at: datetime | None = None
    acknowledged_at: datetime | None = None
    """When the claimant got in contact with the resident."""
    dispatched_to: str | None = None
    dispatched_at: datetime | None = None
    closed_at: datetime | None = None
    """When it was resolved (or closed as a false alarm)."""
    outcome: Outcome | None = None
    escalation_level: int = 0
    """How many times it escalated (left unclaimed or unacknowledged past its limit)."""
    escalated_at: datetime | None = None


class IncidentLogEntry(_Response):
    """One state change; ``from_status`` is None for the opening."""

    at: datetime
    from_status: IncidentStatus | None
    to_status: IncidentStatus
    actor: str
    note: str


class IncidentNote(_Response):
    """A dispatcher's note; never sent in webhooks."""

    id: int
    at: datetime
    author: str
    text: str


class IncidentDetail(IncidentSummary):
    log: list[IncidentLogEntry]
    notes: list[IncidentNote] = []


class ReadingBucket(_Response):
    """Statistics of one device's metric over one bucket that holds readings."""

    start: datetime
    """Where the bucket begins; buckets are counted from the window's ``from``."""
    count: int
    min: float
    avg: float
    max: float


class RawReading(_Response):
    ts: datetime
    value: float


class ReadingSeries(_Response):
    """One metric of one device over ``[from, to)``.

    ``buckets`` holds one entry per bucket with readings (empty buckets are left out)
    unless ``bucket`` is ``raw``; then ``readings`` holds the readings themselves, in
    time order, at most ``limit`` of them, and ``truncated`` says more were left out.
    """

    device_id: str
    metric: Metric
    bucket: Bucket
    start: datetime = Field(serialization_alias="from")
    end: datetime = Field(serialization_alias="to")
    buckets: list[ReadingBucket]
    readings: list[RawReading]
    truncated: bool
    rollup_until: datetime | None
    """For ``1h`` and ``1d``: hours before this came from the hourly rollup, which may
    miss readings that arrived late since the last fold (at most one maintenance
    interval ago); later hours were aggregated from the readings themselves."""


class Health(_Response):
    status: Literal["ok", "unavailable"]
    database: Literal["ok", "unavailable"]
    detail: str = ""
    time: datetime
    """The server's clock (UTC, milliseconds), for checking a gateway's clock against."""


# Requests of the emergency queue. The dispatcher acting is the holder of the API key
# (its name), never a field of the body.

Note = Annotated[str, Field(max_length=4000, pattern=NO_NUL)]
_Words = Annotated[str, Field(min_length=1, max_length=200, pattern=WORDS)]


class _Request(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AcknowledgeRequest(_Request):
    """The claimant is in contact with the resident."""

    note: Note = ""


class DispatchRequest(_Request):
    dispatched_to: _Words
    """Who was sent: a care team, a neighbour warden, an ambulance reference."""
    note: Note = ""


class ResolveRequest(_Request):
    """``outcome`` ``false_alarm`` closes the incident as ``false_alarm``; the others
    as ``resolved``."""

    outcome: Outcome
    notes: Note = ""


class NoteRequest(_Request):
    text: Annotated[str, Field(min_length=1, max_length=4000, pattern=WORDS)]


# Webhooks (cloud.webhooks, docs/webhooks.md): subscriptions and their deliveries.


class WebhookSubscriptionRequest(_Request):
    """Subscribe ``url`` to the incidents of a node of the community tree and below it.

    Empty ``event_types`` and ``incident_types`` let everything through;
    ``max_priority`` 1 means P1 incidents only. Incident types are the ``incident``
    names of the rules the cloud runs with, checked by ``cloud.webhooks.filters``
    (they are data, so this schema cannot list them).
    """

    community: Annotated[str, Field(pattern=NODE_PATH_PATTERN, max_length=65)]
    """A node's path: ``xijin/fenghuang`` (community), ``xijin`` (street), ``ningguo``
    (city); one the caller's key reaches."""
    tier: Literal["city", "street", "community"] | None = None
    """Needed only when a city and a street share the name."""
    url: Annotated[str, Field(min_length=8, max_length=2048, pattern=NO_NUL)]
    description: Annotated[str, Field(max_length=200, pattern=NO_NUL)] = ""
    event_types: list[WebhookEvent] = Field(default_factory=list, max_length=len(WebhookEvent))
    incident_types: list[Annotated[str, Field(min_length=1, max_length=64, pattern=NO_NUL)]] = (
        Field(default_factory=list, max_length=50)
    )
    max_priority: Annotated[int, Field(ge=min(Priority), le=max(Priority))] = 3


class WebhookSubscription(_Response):
    """A subscription as listed: its secrets are never shown again, only counted."""

    id: int
    community: str
    tier: str
    url: str
    description: str
    event_types: list[str]
    incident_types: list[str]
    max_priority: int
    status: Literal["active", "disabled"]
    disabled_reason: str | None
    secret_count: int
    created_at: datetime
    updated_at: datetime


class WebhookSubscriptionCreated(WebhookSubscription):
    secret: str
    """The signing secret (``whsec_…``), shown this once: store it with the receiver."""


class WebhookSecret(_Response):
    subscription_id: int
    secret: str
    """The new signing secret, shown this once. Deliveries are signed with it and with
    the previous ones until those are retired."""


class WebhookSecretsRetired(_Response):
    subscription_id: int
    retired: int


class WebhookDisableRequest(_Request):
    reason: Annotated[str, Field(min_length=1, max_length=200, pattern=NO_NUL)] = (
        "disabled by an operator"
    )


class WebhookSubscriptionDisabled(_Response):
    subscription: WebhookSubscription
    dead_lettered: int
    """Pending deliveries that became dead letters (replay them after enabling)."""


class WebhookDelivery(_Response):
    """One delivery; ``message_id`` is the ``webhook-id`` header of every attempt."""

    id: int
    message_id: str
    subscription_id: int
    incident_id: int | None
    event_type: str
    status: Literal["pending", "delivered", "dead"]
    attempts: int
    next_attempt_at: datetime
    last_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    created_at: datetime
    delivered_at: datetime | None


class WebhookReplay(_Response):
    replayed: int
    """Deliveries made due again now, each keeping its ``webhook-id``."""
