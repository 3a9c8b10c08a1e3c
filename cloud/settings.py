"""Typed settings of the cloud tier, read from ``ANJU_*`` environment variables.

Validated once at start-up: a missing or malformed value raises ``SettingsError``
naming the variable and the form it expects, before any connection is tried.

- ``ANJU_DATABASE_URL`` (required): ``postgresql://user[:password]@host[:port]/dbname``
- ``ANJU_MQTT_URL`` (required by ingest):
  ``mqtt://[user[:password]@]host[:port][?version=5|3.1.1]``
- ``ANJU_API_HOST`` (default ``127.0.0.1``) and ``ANJU_API_PORT`` (default ``8080``)
- ``ANJU_INGEST_GROUP`` (default ``anju-ingest``): the MQTT v5 shared-subscription group
- ``ANJU_INGEST_CLIENT_ID`` (default ``anju-ingest-{hostname}``): the stable MQTT client
  id prefix; worker N connects as ``{prefix}-{N}``
- ``ANJU_STORAGE_*``: how readings are kept over time, see ``StorageSettings`` (the
  variable of each field is its name in capitals after the prefix, for example
  ``ANJU_STORAGE_RETENTION_DAYS``)
- ``ANJU_WEBHOOK_*``: how webhooks are delivered, see ``WebhookSettings`` (for example
  ``ANJU_WEBHOOK_ALLOW_PRIVATE``; docs/webhooks.md)
- ``ANJU_QUEUE_*``: escalation limits of the emergency queue, see ``QueueSettings``
  (for example ``ANJU_QUEUE_P1_UNCLAIMED_S``; docs/emergency-queue.md)
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from collections.abc import Mapping
from typing import Annotated, Final, Literal, Self, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from cloud.errors import SettingsError
from schemas.broker import BrokerAddress, parse_broker_url
from schemas.errors import SchemaError

DATABASE_URL_VAR: Final = "ANJU_DATABASE_URL"
MQTT_URL_VAR: Final = "ANJU_MQTT_URL"
DATABASE_URL_FORM: Final = "postgresql://user[:password]@host[:port]/dbname"
MQTT_URL_FORM: Final = "mqtt://[user[:password]@]host[:port][?version=5|3.1.1]"

_M = TypeVar("_M", bound=BaseModel)
_MQTT_NAME: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,47}$"


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

STANDARD_WEBHOOKS_RETRY_SCHEDULE_S: Final = (
    5.0,
    5 * 60.0,
    30 * 60.0,
    2 * 3600.0,
    5 * 3600.0,
    10 * 3600.0,
    14 * 3600.0,
    20 * 3600.0,
    24 * 3600.0,
)
"""The Standard Webhooks example schedule after the immediate first attempt: 5 s, 5 min,
30 min, 2 h, 5 h, 10 h, 14 h, 20 h, 24 h (ten attempts over about 75 hours)."""


class WebhookSettings(BaseModel):
    """How webhook deliveries are sent and retried (``cloud.webhooks``, docs/webhooks.md).

    Raises SettingsError, naming the variable, for a schedule that is empty, negative or
    longer than 100 attempts.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    timeout_s: Annotated[float, Field(gt=0, le=120)] = 15.0
    """Longest one attempt may take, connecting included, before it counts as failed."""
    allow_private: bool = False
    """Send to any address, private, loopback and link-local ones included (tests, or a
    closed network). Off, such URLs are refused when subscribed and again when sent."""
    allowed_networks: tuple[IPNetwork, ...] = ()
    """Networks allowed even though they are not public, such as ``10.20.0.0/16`` for a
    property manager's tools on a private link; everything else non-public stays refused."""
    retry_schedule_s: tuple[float, ...] = STANDARD_WEBHOOKS_RETRY_SCHEDULE_S
    """Delays after each failed attempt; a delivery gets one more attempt than delays
    (the first is immediate), then becomes a dead letter."""
    jitter: Annotated[float, Field(ge=0, le=0.5)] = 0.1
    """Each delay is stretched by a random fraction up to this, so endpoints that failed
    together are not retried together."""
    max_retry_after_s: Annotated[float, Field(ge=0)] = 24 * 3600.0
    """Longest ``Retry-After`` honoured; a receiver asking for more gets this."""
    poll_interval_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    """Longest a delivery worker sleeps before looking for due deliveries again."""
    batch_size: Annotated[int, Field(ge=1, le=1000)] = 20
    """Deliveries one worker claims at once and sends concurrently."""
    lease_margin_s: Annotated[float, Field(gt=0)] = 30.0
    """A claimed delivery is not due again until ``timeout_s`` plus this has passed, so
    a worker that died mid-send is replaced without a live one being doubled."""

    @property
    def max_attempts(self) -> int:
        """Attempts before a delivery is dead-lettered: the first plus one per delay."""
        return len(self.retry_schedule_s) + 1

    @property
    def lease_s(self) -> float:
        """How long a claim keeps a delivery from other workers."""
        return self.timeout_s + self.lease_margin_s

    @field_validator("allowed_networks", "retry_schedule_s", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("allowed_networks", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        if isinstance(value, tuple | list):
            try:
                return tuple(
                    v if not isinstance(v, str) else ipaddress.ip_network(v, strict=False)
                    for v in value
                )
            except ValueError as exc:
                raise SettingsError(
                    "ANJU_WEBHOOK_ALLOWED_NETWORKS",
                    str(exc),
                    "comma-separated networks such as 10.20.0.0/16,fd00::/8",
                ) from None
        return value

    @model_validator(mode="after")
    def _schedule(self) -> Self:
        schedule = self.retry_schedule_s
        if not schedule or len(schedule) > 99 or any(d < 0 for d in schedule):
            raise SettingsError(
                "ANJU_WEBHOOK_RETRY_SCHEDULE_S",
                f"{','.join(f'{d:g}' for d in schedule) or 'nothing'} is not a schedule",
                "1 to 99 comma-separated delays in seconds, none negative",
            )
        return self


class IngestSettings(BaseModel):
    """How ingest workers meet the broker and how patiently they retry."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    group: Annotated[str, Field(pattern=_MQTT_NAME)] = "anju-ingest"
    client_id: Annotated[str, Field(pattern=_MQTT_NAME)] = Field(
        default_factory=lambda: f"anju-ingest-{_hostname()}"
    )
    session_expiry_s: Annotated[int, Field(ge=60, le=2**32 - 1)] = 7 * 24 * 3600
    """How long the broker keeps a disconnected worker's session and queued messages."""
    write_timeout_s: Annotated[float, Field(gt=0)] = 30.0
    """Longest a message's transaction may take before it is abandoned (not acknowledged)."""
    checkout_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    """Longest wait for a database connection from the pool."""
    backoff_initial_s: Annotated[float, Field(gt=0)] = 0.5
    backoff_cap_s: Annotated[float, Field(gt=0)] = 30.0
    receive_maximum: Annotated[int, Field(ge=1, le=65535)] = 2000
    """Unacknowledged messages an MQTT v5 broker may send a worker at once (the CONNECT
    Receive Maximum). The worker's own queue is unbounded on purpose: Mosquitto 2.0.11
    was measured sending over twice this many once acknowledgements flowed, and a
    message dropped for a full queue is never acknowledged, which stalls the session.
    The broker's per-client queue limits bound the memory instead (docs/decisions.md)."""
    group_max_readings: Annotated[int, Field(ge=1)] = 100_000
    """Readings written in one transaction at most. Larger groups sort into the
    (device_id, metric, ts) index with fewer page visits: for 40,000 series, groups of
    20,000 readings were written at about 240,000 readings/s, of 100,000 at about
    300,000 (docs/decisions.md)."""
    group_max_messages: Annotated[int, Field(ge=1)] = 500
    """Messages written in one transaction at most; keep it well under
    ``receive_maximum`` so the next group gathers while one is written."""
    group_max_wait_s: Annotated[float, Field(gt=0)] = 0.2
    """Longest a telemetry message waits for others before its group is due; a due
    group still grows until the writer is free. A message carrying events makes its
    group due at once, so alarms wait at most for the group being written."""
    poison_attempts: Annotated[int, Field(ge=1)] = 3
    """Times one message may fail on its own, for a reason that is not the database
    being unavailable, before it is quarantined instead of blocking its worker."""


class StorageSettings(BaseModel):
    """How readings are kept over time (``cloud.storage.timeseries``, docs/storage.md).

    Raises SettingsError, naming both variables, when two values contradict each other.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: Literal["auto", "timescaledb", "partitions"] = "auto"
    """``auto``: TimescaleDB when the server offers it, else native partitions."""
    retention_days: Annotated[int, Field(ge=1, le=36500)] = 90
    """Raw readings older than this are dropped (whole partitions or chunks)."""
    rollup_retention_days: Annotated[int, Field(ge=1, le=36500)] = 730
    """Hourly rollups outlive the raw readings they summarise, for long-range charts."""
    late_window_h: Annotated[int, Field(ge=1)] = 48
    """How late readings are expected to arrive (a gateway's backlog after an outage).
    TimescaleDB compresses chunks and stops refreshing hours older than this; the
    plain path's rollup takes late readings of any age."""
    maintenance_interval_s: Annotated[float, Field(ge=10, le=86400)] = 300.0
    """How often the rollup is brought up to date (and partitions and retention checked)."""
    partition_months_ahead: Annotated[int, Field(ge=1, le=24)] = 3
    ingest_rows_per_s: Annotated[int, Field(ge=1)] = 10_000
    """Sustained readings per second expected, to size TimescaleDB chunks."""
    chunk_interval_h: Annotated[int, Field(ge=1, le=720)] | None = None
    """TimescaleDB chunk interval; unset, it is sized from ``shared_buffers`` and
    ``ingest_rows_per_s`` by TimescaleDB's rule (``timeseries.chunk_interval``)."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.rollup_retention_days < self.retention_days:
            raise SettingsError(
                "ANJU_STORAGE_ROLLUP_RETENTION_DAYS",
                f"{self.rollup_retention_days} days is shorter than "
                f"ANJU_STORAGE_RETENTION_DAYS ({self.retention_days})",
                "at least as many days as the raw readings are kept",
            )
        if self.late_window_h * 2 > self.retention_days * 24:
            raise SettingsError(
                "ANJU_STORAGE_LATE_WINDOW_H",
                f"{self.late_window_h} hours is more than half of "
                f"ANJU_STORAGE_RETENTION_DAYS ({self.retention_days} days)",
                "a late-arrival window at most half the retention period, so late "
                "readings still find their raw neighbours",
            )
        return self


class QueueSettings(BaseModel):
    """When the emergency queue escalates an incident (docs/emergency-queue.md).

    An incident is *unclaimed* past ``pN_unclaimed_s`` after it opened and
    *unacknowledged* past ``pN_unacknowledged_s`` after it opened (the resident's wait,
    which is what the telecare figures measure), for its priority N. P1's 60 s and
    180 s are the telecare industry's: 97.5% of calls answered within 60 s, 99% within
    180 s. Raises SettingsError, naming the variable, when a limit is out of order.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    p1_unclaimed_s: Annotated[float, Field(gt=0)] = 60.0
    p1_unacknowledged_s: Annotated[float, Field(gt=0)] = 180.0
    p2_unclaimed_s: Annotated[float, Field(gt=0)] = 120.0
    """P2 is sustained abnormal vitals: urgent, but minutes rather than seconds."""
    p2_unacknowledged_s: Annotated[float, Field(gt=0)] = 300.0
    p3_unclaimed_s: Annotated[float, Field(gt=0)] = 300.0
    """P3 is long inactivity and device faults: a check on someone, not a rescue."""
    p3_unacknowledged_s: Annotated[float, Field(gt=0)] = 900.0
    repeat_s: Annotated[float, Field(gt=0)] = 60.0
    """How often an escalated incident escalates again while its condition is unmet;
    also the least time a late claimer gets to reach the resident before the
    unacknowledged timer fires."""
    poll_interval_s: Annotated[float, Field(gt=0, le=60)] = 1.0
    """Longest an escalation worker sleeps before looking for due timers again (it
    sleeps less when a known timer is due sooner)."""
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 100
    """Due timers one worker fires in one transaction at most."""

    def unclaimed_s(self, priority: int) -> float:
        """The unclaimed limit of ``priority`` (1-3); raises ValueError for another."""
        return (self.p1_unclaimed_s, self.p2_unclaimed_s, self.p3_unclaimed_s)[
            _priority_index(priority)
        ]

    def unacknowledged_s(self, priority: int) -> float:
        """The unacknowledged limit of ``priority`` (1-3); raises ValueError for another."""
        return (self.p1_unacknowledged_s, self.p2_unacknowledged_s, self.p3_unacknowledged_s)[
            _priority_index(priority)
        ]

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        for priority in (1, 2, 3):
            if self.unacknowledged_s(priority) < self.unclaimed_s(priority):
                raise SettingsError(
                    f"ANJU_QUEUE_P{priority}_UNACKNOWLEDGED_S",
                    f"{self.unacknowledged_s(priority)} s is shorter than "
                    f"ANJU_QUEUE_P{priority}_UNCLAIMED_S ({self.unclaimed_s(priority)} s)",
                    "at least the unclaimed limit: both count from the opening",
                )
        for priority in (2, 3):
            if self.unclaimed_s(priority) < self.unclaimed_s(priority - 1):
                raise SettingsError(
                    f"ANJU_QUEUE_P{priority}_UNCLAIMED_S",
                    f"{self.unclaimed_s(priority)} s is shorter than the more urgent "
                    f"ANJU_QUEUE_P{priority - 1}_UNCLAIMED_S ({self.unclaimed_s(priority - 1)} s)",
                    "limits that grow as priority falls",
                )
        return self


def _priority_index(priority: int) -> int:
    if priority not in (1, 2, 3):
        raise ValueError(f"priority {priority} is not 1, 2 or 3")
    return priority - 1


class CloudSettings(BaseModel):
    """Everything ``anju cloud run`` and ``anju cloud ingest`` need.

    ``mqtt`` is ``None`` when ``ANJU_MQTT_URL`` is unset; ``broker`` then raises
    ``SettingsError`` for the callers that need it (the API alone does not).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    database_url: str
    mqtt: BrokerAddress | None = None
    api_host: str = "127.0.0.1"
    api_port: Annotated[int, Field(ge=0, le=65535)] = 8080
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)

    @property
    def broker(self) -> BrokerAddress:
        """The MQTT broker; raises SettingsError when ``ANJU_MQTT_URL`` was not given."""
        if self.mqtt is None:
            raise SettingsError(MQTT_URL_VAR, "is not set", MQTT_URL_FORM)
        return self.mqtt


def _hostname() -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:32]
    return cleaned or "host"


def check_database_url(url: str, *, variable: str = DATABASE_URL_VAR) -> str:
    """Return ``url`` if it is a PostgreSQL URL, else raise SettingsError naming ``variable``."""
    if not re.match(r"^postgres(ql)?://[^/]*(/[^/?#]+)?([?#].*)?$", url):
        raise SettingsError(variable, f"{url!r} is not a PostgreSQL URL", DATABASE_URL_FORM)
    return url


def load_database_url(environ: Mapping[str, str] | None = None) -> str:
    """The database URL from ``ANJU_DATABASE_URL``; raises SettingsError if unset or bad."""
    env = os.environ if environ is None else environ
    url = env.get(DATABASE_URL_VAR, "").strip()
    if not url:
        raise SettingsError(DATABASE_URL_VAR, "is not set", DATABASE_URL_FORM)
    return check_database_url(url)


def load_settings(
    environ: Mapping[str, str] | None = None, *, require_mqtt: bool = True
) -> CloudSettings:
    """Read and validate every ``ANJU_*`` variable of the cloud tier.

    Raises SettingsError for the first variable that is missing (``ANJU_MQTT_URL`` only
    when ``require_mqtt``) or malformed, naming it and the form it expects.
    """
    env = os.environ if environ is None else environ
    database_url = load_database_url(env)
    mqtt: BrokerAddress | None = None
    mqtt_url = env.get(MQTT_URL_VAR, "").strip()
    if mqtt_url:
        try:
            mqtt = parse_broker_url(mqtt_url)
        except SchemaError as exc:
            raise SettingsError(MQTT_URL_VAR, str(exc), MQTT_URL_FORM) from None
    elif require_mqtt:
        raise SettingsError(MQTT_URL_VAR, "is not set", MQTT_URL_FORM)

    name_form = "letters, digits, '.', '_', '-' (at most 48, starting with a letter or digit)"
    top_vars = {
        "api_host": ("ANJU_API_HOST", "an address to bind, such as 127.0.0.1"),
        "api_port": ("ANJU_API_PORT", "a port number 0-65535"),
    }
    ingest_vars = {
        "group": ("ANJU_INGEST_GROUP", name_form),
        "client_id": ("ANJU_INGEST_CLIENT_ID", name_form),
    }
    ingest = _validate(IngestSettings, ingest_vars, env, {})
    storage = _validate(StorageSettings, _STORAGE_VARIABLES, env, {})
    webhooks = _validate(WebhookSettings, _WEBHOOK_VARIABLES, env, {})
    queue = _validate(QueueSettings, _QUEUE_VARIABLES, env, {})
    return _validate(
        CloudSettings,
        top_vars,
        env,
        {
            "database_url": database_url,
            "mqtt": mqtt,
            "ingest": ingest,
            "storage": storage,
            "webhooks": webhooks,
            "queue": queue,
        },
    )


_STORAGE_VARIABLES: Final = {
    "backend": ("ANJU_STORAGE_BACKEND", "auto, timescaledb or partitions"),
    "retention_days": ("ANJU_STORAGE_RETENTION_DAYS", "whole days, 1-36500"),
    "rollup_retention_days": ("ANJU_STORAGE_ROLLUP_RETENTION_DAYS", "whole days, 1-36500"),
    "late_window_h": ("ANJU_STORAGE_LATE_WINDOW_H", "whole hours, at least 1"),
    "maintenance_interval_s": ("ANJU_STORAGE_MAINTENANCE_INTERVAL_S", "seconds, 10-86400"),
    "partition_months_ahead": ("ANJU_STORAGE_PARTITION_MONTHS_AHEAD", "whole months, 1-24"),
    "ingest_rows_per_s": ("ANJU_STORAGE_INGEST_ROWS_PER_S", "readings per second, at least 1"),
    "chunk_interval_h": ("ANJU_STORAGE_CHUNK_INTERVAL_H", "whole hours, 1-720"),
}

_QUEUE_VARIABLES: Final = {
    **{
        f"p{priority}_{kind}_s": (
            f"ANJU_QUEUE_P{priority}_{kind.upper()}_S",
            "seconds after the opening, more than 0",
        )
        for priority in (1, 2, 3)
        for kind in ("unclaimed", "unacknowledged")
    },
    "repeat_s": ("ANJU_QUEUE_REPEAT_S", "seconds between repeated escalations, more than 0"),
    "poll_interval_s": ("ANJU_QUEUE_POLL_INTERVAL_S", "seconds, more than 0 and at most 60"),
    "batch_size": ("ANJU_QUEUE_BATCH_SIZE", "timers per transaction, 1-10000"),
}

_WEBHOOK_VARIABLES: Final = {
    "timeout_s": ("ANJU_WEBHOOK_TIMEOUT_S", "seconds, more than 0 and at most 120"),
    "allow_private": ("ANJU_WEBHOOK_ALLOW_PRIVATE", "1 or 0"),
    "allowed_networks": (
        "ANJU_WEBHOOK_ALLOWED_NETWORKS",
        "comma-separated networks such as 10.20.0.0/16,fd00::/8",
    ),
    "retry_schedule_s": (
        "ANJU_WEBHOOK_RETRY_SCHEDULE_S",
        "comma-separated delays in seconds, such as 5,300,1800",
    ),
    "jitter": ("ANJU_WEBHOOK_JITTER", "a fraction, 0-0.5"),
    "max_retry_after_s": ("ANJU_WEBHOOK_MAX_RETRY_AFTER_S", "seconds, at least 0"),
    "poll_interval_s": ("ANJU_WEBHOOK_POLL_INTERVAL_S", "seconds, more than 0 and at most 60"),
    "batch_size": ("ANJU_WEBHOOK_BATCH_SIZE", "deliveries per worker at once, 1-1000"),
    "lease_margin_s": ("ANJU_WEBHOOK_LEASE_MARGIN_S", "seconds, more than 0"),
}


def _validate(
    model: type[_M],
    variables: Mapping[str, tuple[str, str]],
    env: Mapping[str, str],
    given: Mapping[str, object],
) -> _M:
    """Build ``model`` from ``given`` plus the set ``variables``; errors name the variable."""
    values = dict(given)
    values.update({key: env[var] for key, (var, _) in variables.items() if env.get(var)})
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        key = str(exc.errors()[0]["loc"][0])
        var, form = variables[key]
        raise SettingsError(var, f"{env[var]!r} is not valid", form) from None
