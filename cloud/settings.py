"""Typed settings of the cloud tier, read from ``ANJU_*`` environment variables.

One ``pydantic-settings`` model per subsystem, each with its own prefix: a field's
variable is the prefix and the field's name in capitals (``QueueSettings.repeat_s``
is ``ANJU_QUEUE_REPEAT_S``), so no name is written twice. ``load_settings`` validates
them all at start-up, before any connection is tried, and raises one ``SettingsError``
listing every mistake: the variable, its value (never a key or a password) and the
form it expects.

- ``ANJU_DATABASE_URL`` (required): ``postgresql://user[:password]@host[:port]/dbname``
- ``ANJU_MQTT_URL`` (required by ingest):
  ``mqtt://[user[:password]@]host[:port][?version=5|3.1.1]``
- ``ANJU_API_*``: where the API listens, ``ANJU_API_HOST`` (default ``127.0.0.1``) and
  ``ANJU_API_PORT`` (``8080``), and how it slows down key guessing,
  ``ANJU_API_AUTH_FAILURE_LIMIT`` (``20`` failed authentications per client address
  in each ``ANJU_API_AUTH_FAILURE_WINDOW_S``, ``60``); see ``ApiSettings``
- ``ANJU_MQTT_CA_FILE``: the CA of an ``mqtts://`` broker for the cloud's own workers
  (ingest, the config pusher), when the system does not trust it; see ``MqttSettings``
- ``ANJU_INGEST_*``: how ingest workers meet the broker, see ``IngestSettings``: for
  example ``ANJU_INGEST_GROUP`` (default ``anju-ingest``), the MQTT v5
  shared-subscription group, and ``ANJU_INGEST_CLIENT_ID`` (default
  ``anju-ingest-{hostname}``), the client id prefix; worker N's telemetry lane
  connects as ``{prefix}-{N}``, its alarm lane as ``{prefix}-{N}-alarms``
- ``ANJU_STORAGE_*``: how readings are kept over time, see ``StorageSettings`` (for
  example ``ANJU_STORAGE_RETENTION_DAYS``; docs/storage.md)
- ``ANJU_WEBHOOK_*``: how webhooks are delivered, see ``WebhookSettings`` (for example
  ``ANJU_WEBHOOK_ALLOW_PRIVATE``; docs/webhooks.md)
- ``ANJU_QUEUE_*``: escalation limits of the emergency queue, see ``QueueSettings``
  (for example ``ANJU_QUEUE_P1_UNCLAIMED_S``; docs/emergency-queue.md)
- ``ANJU_RESIDENT_KEYS``: the keys that wrap residents' data keys, comma-separated
  ``ID:BASE64`` entries, the current key first; see ``ResidentSettings``
- ``ANJU_BROKER_*``: how the API gives gateways their broker credentials, see
  ``BrokerSettings`` (for example ``ANJU_BROKER_ADMIN_URL``; docs/broker.md)
- ``ANJU_PROFILE_DIR``: the device profiles the registry checks devices against and
  pushes to gateways, as for the command line; see ``ProfileSettings``

A variable under one of these prefixes that is no setting but close to one (a typo
such as ``ANJU_QUEUE_P1_UNCLAIMD_S``) is refused too, rather than silently ignored.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import ipaddress
import os
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretBytes,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

import schemas
from cloud.errors import SettingsError, SettingsProblem
from schemas.broker import BrokerAddress, parse_broker_url
from schemas.errors import SchemaError

DATABASE_URL_VAR: Final = "ANJU_DATABASE_URL"
MQTT_URL_VAR: Final = "ANJU_MQTT_URL"
DATABASE_URL_FORM: Final = "postgresql://user[:password]@host[:port]/dbname"
MQTT_URL_FORM: Final = "mqtt://[user[:password]@]host[:port][?version=5|3.1.1]"

WRAPPING_KEY_BYTES: Final = 32
"""Length of a key-encryption key: AES-256."""

_MQTT_NAME: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,47}$"
_NAME_FORM: Final = "letters, digits, '.', '_', '-' (at most 48, starting with a letter or digit)"
WRAPPING_KEY_ID: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
_KEYS_FORM: Final = (
    "comma-separated ID:BASE64 entries, the current key first; each ID 1-32 letters, "
    "digits, '.', '_' or '-' starting with a letter or digit, each BASE64 (standard or "
    f"url-safe) of exactly {WRAPPING_KEY_BYTES} bytes"
)
_URL_SAFE: Final = str.maketrans("-_", "+/")
_TYPO_CUTOFF: Final = 0.75
"""How alike (difflib's ratio) an unknown variable's name must be to a setting's, after
their shared prefix, to be reported as its misspelling."""

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


@dataclass(frozen=True)
class Form:
    """What a setting's value should look like, told with its variable when it is refused.

    ``secret`` keeps the value itself out of the message (keys).
    """

    text: str
    secret: bool = False


_Seconds = Annotated[float, Field(gt=0), Form("seconds, more than 0")]
_PollSeconds = Annotated[float, Field(gt=0, le=60), Form("seconds, more than 0 and at most 60")]
_QueueLimit = Annotated[float, Field(gt=0), Form("seconds after the opening, more than 0")]


class _Subsystem(BaseSettings):
    """The settings of one subsystem, each field read from ``{env_prefix}{FIELD}``.

    Constructed directly, pydantic-settings reads ``os.environ``; ``from_environ`` reads
    a given mapping only, which is what ``load_settings`` and the tests use. Every field
    carries a ``Form`` for error messages.
    """

    model_config = SettingsConfigDict(frozen=True, extra="forbid", env_ignore_empty=True)

    @classmethod
    def variable(cls, field: str) -> str:
        """The environment variable of ``field``, such as ``ANJU_QUEUE_REPEAT_S``."""
        return f"{cls.model_config.get('env_prefix', '')}{field}".upper()

    @classmethod
    def form(cls, field: str) -> Form:
        """The form ``field`` expects, for error messages."""
        metadata = cls.model_fields[field].metadata
        return next((m for m in metadata if isinstance(m, Form)), Form("a valid value"))

    @classmethod
    def defaults(cls) -> Self:
        """Every field at its default, whatever the environment holds."""
        return cls.from_environ({})

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Self:
        """The settings ``environ`` gives (empty values count as unset), defaults for the rest.

        Every field is passed to the constructor, so ``os.environ`` cannot fill one in:
        a test's dict is the whole environment. Raises SettingsError listing each bad
        variable with its value (never a secret's) and expected form.
        """
        given = {
            name: environ[cls.variable(name)]
            for name in cls.model_fields
            if environ.get(cls.variable(name))
        }
        values: dict[str, Any] = {
            name: given[name] if name in given else field.get_default(call_default_factory=True)
            for name, field in cls.model_fields.items()
        }
        try:
            return cls(**values)
        except ValidationError as exc:
            raise SettingsError.of(cls._problems(exc.errors(), given)) from None

    @classmethod
    def _problems(
        cls, errors: list[ErrorDetails], given: Mapping[str, str]
    ) -> list[SettingsProblem]:
        """One problem per refused field, from pydantic's errors."""
        found: dict[str, SettingsProblem] = {}
        for error in errors:
            name = str(error["loc"][0])
            if name in found:
                continue
            form = cls.form(name)
            value = "" if form.secret else f"{given.get(name, '')!r} "
            found[name] = SettingsProblem(
                cls.variable(name), f"{value}is not valid ({_reason(error)})", form.text
            )
        return list(found.values())


def _reason(error: ErrorDetails) -> str:
    """Pydantic's message for ``error``, with the list item it concerns."""
    ctx = error.get("ctx", {})
    message = str(ctx["error"]) if error["type"] == "value_error" else error["msg"]
    loc = error["loc"]
    return f"item {loc[1] + 1}: {message}" if len(loc) > 1 and isinstance(loc[1], int) else message


class ApiSettings(_Subsystem):
    """Where the HTTP API listens, and how it slows down the guessing of API keys."""

    model_config = SettingsConfigDict(env_prefix="ANJU_API_")

    host: Annotated[str, Form("an address to bind, such as 127.0.0.1")] = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535), Form("a port number 0-65535")] = 8080
    auth_failure_limit: Annotated[int, Field(ge=1), Form("failed attempts, at least 1")] = 20
    """Failed authentications one client address may make per window; past it, the
    address is answered 429 until its window ends, valid key or not."""
    auth_failure_window_s: _Seconds = 60.0
    """The window the failures count in, starting at an address's first failure."""


class WebhookSettings(_Subsystem):
    """How webhook deliveries are sent and retried (``cloud.webhooks``, docs/webhooks.md)."""

    model_config = SettingsConfigDict(env_prefix="ANJU_WEBHOOK_")

    timeout_s: Annotated[
        float, Field(gt=0, le=120), Form("seconds, more than 0 and at most 120")
    ] = 15.0
    """Longest one attempt may take, connecting included, before it counts as failed."""
    allow_private: Annotated[bool, Form("1 or 0")] = False
    """Send to any address, private, loopback and link-local ones included (tests, or a
    closed network). Off, such URLs are refused when subscribed and again when sent."""
    allowed_networks: Annotated[
        tuple[IPNetwork, ...],
        NoDecode,
        Form("comma-separated networks such as 10.20.0.0/16,fd00::/8"),
    ] = ()
    """Networks allowed even though they are not public, such as ``10.20.0.0/16`` for a
    property manager's tools on a private link; everything else non-public stays refused."""
    retry_schedule_s: Annotated[
        tuple[Annotated[float, Field(ge=0)], ...],
        NoDecode,
        Field(min_length=1, max_length=99),
        Form("1 to 99 comma-separated delays in seconds, none negative, such as 5,300,1800"),
    ] = STANDARD_WEBHOOKS_RETRY_SCHEDULE_S
    """Delays after each failed attempt; a delivery gets one more attempt than delays
    (the first is immediate), then becomes a dead letter."""
    jitter: Annotated[float, Field(ge=0, le=0.5), Form("a fraction, 0-0.5")] = 0.1
    """Each delay is stretched by a random fraction up to this, so endpoints that failed
    together are not retried together."""
    max_retry_after_s: Annotated[float, Field(ge=0), Form("seconds, at least 0")] = 24 * 3600.0
    """Longest ``Retry-After`` honoured; a receiver asking for more gets this."""
    poll_interval_s: _PollSeconds = 1.0
    """Longest a delivery worker sleeps before looking for due deliveries again."""
    batch_size: Annotated[
        int, Field(ge=1, le=1000), Form("deliveries per worker at once, 1-1000")
    ] = 20
    """Deliveries one worker claims at once and sends concurrently."""
    lease_margin_s: _Seconds = 30.0
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

    @field_validator("retry_schedule_s", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return _comma_separated(value) if isinstance(value, str) else value

    @field_validator("allowed_networks", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        # strict=False: 10.20.1.0/16 means 10.20.0.0/16, as an operator writing it means.
        if isinstance(value, str):
            return tuple(ipaddress.ip_network(v, strict=False) for v in _comma_separated(value))
        return value


def _comma_separated(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


class IngestSettings(_Subsystem):
    """How ingest workers meet the broker and how patiently they retry."""

    model_config = SettingsConfigDict(env_prefix="ANJU_INGEST_")

    group: Annotated[str, Field(pattern=_MQTT_NAME), Form(_NAME_FORM)] = "anju-ingest"
    client_id: Annotated[str, Field(pattern=_MQTT_NAME), Form(_NAME_FORM)] = Field(
        default_factory=lambda: f"anju-ingest-{_hostname()}"
    )
    session_expiry_s: Annotated[
        int, Field(ge=60, le=2**32 - 1), Form("whole seconds, 60-4294967295")
    ] = 7 * 24 * 3600
    """How long the broker keeps a disconnected lone worker's session and queued
    messages (a plain subscription: nobody else receives them meanwhile)."""
    shared_session_expiry_s: Annotated[int, Field(ge=0, le=3600), Form("whole seconds, 0-3600")] = 5
    """How long the broker keeps a disconnected worker's session when the worker is a
    member of the shared group. Short on purpose: Mosquitto 2.0 keeps handing a
    disconnected member its share of new messages until the session ends, and those
    wait there, alarms included. Once it ends, the gateways' resends (after their
    ``uplink.ack_timeout_s``, which must be longer) reach the live members. A worker
    back within this time resumes its session."""
    write_timeout_s: _Seconds = 30.0
    """Longest a message's transaction may take before it is abandoned (not acknowledged)."""
    checkout_timeout_s: _Seconds = 10.0
    """Longest wait for a database connection from the pool."""
    backoff_initial_s: _Seconds = 0.5
    backoff_cap_s: _Seconds = 30.0
    receive_maximum: Annotated[int, Field(ge=1, le=65535), Form("messages, 1-65535")] = 2000
    """Unacknowledged messages an MQTT v5 broker may send a worker at once (the CONNECT
    Receive Maximum). The worker's own queue is unbounded on purpose: Mosquitto 2.0.11
    was measured sending over twice this many once acknowledgements flowed, and a
    message dropped for a full queue is never acknowledged, which stalls the session.
    The broker's per-client queue limits bound the memory instead (docs/decisions.md)."""
    group_max_readings: Annotated[int, Field(ge=1), Form("readings, at least 1")] = 100_000
    """Readings written in one transaction at most. Larger groups sort into the
    (device_id, metric, ts) index with fewer page visits: for 40,000 series, groups of
    20,000 readings were written at about 240,000 readings/s, of 100,000 at about
    300,000 (docs/decisions.md)."""
    group_max_messages: Annotated[int, Field(ge=1), Form("messages, at least 1")] = 500
    """Messages written in one transaction at most; keep it well under
    ``receive_maximum`` so the next group gathers while one is written."""
    group_max_wait_s: _Seconds = 0.2
    """Longest a telemetry message waits for others before its group is due; a due
    group still grows until the writer is free. Messages on events topics have their
    own lane, writer and connection, and their groups are due at once: an alarm never
    waits behind telemetry being copied."""
    poison_attempts: Annotated[int, Field(ge=1), Form("attempts, at least 1")] = 3
    """Times one message may fail on its own, for a reason that is not the database
    being unavailable, before it is quarantined instead of blocking its worker."""
    max_payload_bytes: Annotated[
        int, Field(ge=1024, le=256 * 1024 * 1024), Form("bytes, 1024-268435456")
    ] = 4 * 1024 * 1024
    """Largest message payload ingest decodes; a bigger one is quarantined (its first
    64 KiB kept) and refused to its gateway. The edge seals at most 2,000 readings
    (about 240 KB) or 10,000 events (about 1.3 MB of typical events) per batch."""
    clock_past_s: _Seconds = 30 * 24 * 3600.0
    """How long before its time of receipt a reading or event may be dated and be
    believed: a gateway's backlog after a long outage is legitimate. An item dated
    earlier is stored at its time of receipt, flagged ``clock_skew``, and its gateway
    gets one ``gateway_clock_skew`` incident."""
    clock_future_s: _Seconds = 300.0
    """How long after its time of receipt an item may be dated (clocks drift a
    little); later is a wrong clock, handled as for ``clock_past_s``."""


class StorageSettings(_Subsystem):
    """How readings are kept over time (``cloud.storage.timeseries``, docs/storage.md).

    Raises SettingsError, naming both variables, when two values contradict each other.
    """

    model_config = SettingsConfigDict(env_prefix="ANJU_STORAGE_")

    backend: Annotated[
        Literal["auto", "timescaledb", "partitions"], Form("auto, timescaledb or partitions")
    ] = "auto"
    """``auto``: TimescaleDB when the server offers it, else native partitions."""
    retention_days: Annotated[int, Field(ge=1, le=36500), Form("whole days, 1-36500")] = 90
    """Raw readings older than this are dropped (whole partitions or chunks)."""
    rollup_retention_days: Annotated[int, Field(ge=1, le=36500), Form("whole days, 1-36500")] = 730
    """Hourly rollups outlive the raw readings they summarise, for long-range charts."""
    late_window_h: Annotated[int, Field(ge=1), Form("whole hours, at least 1")] = 48
    """How late readings are expected to arrive (a gateway's backlog after an outage).
    TimescaleDB compresses chunks and stops refreshing hours older than this; the
    plain path's rollup takes late readings of any age."""
    maintenance_interval_s: Annotated[float, Field(ge=10, le=86400), Form("seconds, 10-86400")] = (
        300.0
    )
    """How often the rollup is brought up to date (and partitions and retention checked)."""
    partition_months_ahead: Annotated[int, Field(ge=1, le=24), Form("whole months, 1-24")] = 3
    ingest_rows_per_s: Annotated[int, Field(ge=1), Form("readings per second, at least 1")] = 10_000
    """Sustained readings per second expected, to size TimescaleDB chunks."""
    chunk_interval_h: Annotated[
        Annotated[int, Field(ge=1, le=720)] | None, Form("whole hours, 1-720")
    ] = None
    """TimescaleDB chunk interval; unset, it is sized from ``shared_buffers`` and
    ``ingest_rows_per_s`` by TimescaleDB's rule (``timeseries.chunk_interval``)."""

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems = []
        if self.rollup_retention_days < self.retention_days:
            problems.append(
                SettingsProblem(
                    "ANJU_STORAGE_ROLLUP_RETENTION_DAYS",
                    f"{self.rollup_retention_days} days is shorter than "
                    f"ANJU_STORAGE_RETENTION_DAYS ({self.retention_days})",
                    "at least as many days as the raw readings are kept",
                )
            )
        if self.late_window_h * 2 > self.retention_days * 24:
            problems.append(
                SettingsProblem(
                    "ANJU_STORAGE_LATE_WINDOW_H",
                    f"{self.late_window_h} hours is more than half of "
                    f"ANJU_STORAGE_RETENTION_DAYS ({self.retention_days} days)",
                    "a late-arrival window at most half the retention period, so late "
                    "readings still find their raw neighbours",
                )
            )
        if problems:
            raise SettingsError.of(problems)
        return self


class QueueSettings(_Subsystem):
    """When the emergency queue escalates an incident (docs/emergency-queue.md).

    An incident is *unclaimed* past ``pN_unclaimed_s`` after it opened and
    *unacknowledged* past ``pN_unacknowledged_s`` after it opened (the resident's wait,
    which is what the telecare figures measure), for its priority N. P1's 60 s and
    180 s are the telecare industry's: 97.5% of calls answered within 60 s, 99% within
    180 s. Raises SettingsError, naming each variable, when limits are out of order.
    """

    model_config = SettingsConfigDict(env_prefix="ANJU_QUEUE_")

    p1_unclaimed_s: _QueueLimit = 60.0
    p1_unacknowledged_s: _QueueLimit = 180.0
    p2_unclaimed_s: _QueueLimit = 120.0
    """P2 is sustained abnormal vitals: urgent, but minutes rather than seconds."""
    p2_unacknowledged_s: _QueueLimit = 300.0
    p3_unclaimed_s: _QueueLimit = 300.0
    """P3 is long inactivity and device faults: a check on someone, not a rescue."""
    p3_unacknowledged_s: _QueueLimit = 900.0
    repeat_s: Annotated[
        float, Field(gt=0), Form("seconds between repeated escalations, more than 0")
    ] = 60.0
    """How often an escalated incident escalates again while its condition is unmet;
    also the least time a late claimer gets to reach the resident before the
    unacknowledged timer fires."""
    poll_interval_s: _PollSeconds = 1.0
    """Longest an escalation worker sleeps before looking for due timers again (it
    sleeps less when a known timer is due sooner)."""
    batch_size: Annotated[int, Field(ge=1, le=10_000), Form("timers per transaction, 1-10000")] = (
        100
    )
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
        problems = [
            SettingsProblem(
                f"ANJU_QUEUE_P{priority}_UNACKNOWLEDGED_S",
                f"{self.unacknowledged_s(priority)} s is shorter than "
                f"ANJU_QUEUE_P{priority}_UNCLAIMED_S ({self.unclaimed_s(priority)} s)",
                "at least the unclaimed limit: both count from the opening",
            )
            for priority in (1, 2, 3)
            if self.unacknowledged_s(priority) < self.unclaimed_s(priority)
        ]
        problems += [
            SettingsProblem(
                f"ANJU_QUEUE_P{priority}_UNCLAIMED_S",
                f"{self.unclaimed_s(priority)} s is shorter than the more urgent "
                f"ANJU_QUEUE_P{priority - 1}_UNCLAIMED_S ({self.unclaimed_s(priority - 1)} s)",
                "limits that grow as priority falls",
            )
            for priority in (2, 3)
            if self.unclaimed_s(priority) < self.unclaimed_s(priority - 1)
        ]
        if problems:
            raise SettingsError.of(problems)
        return self


def _priority_index(priority: int) -> int:
    if priority not in (1, 2, 3):
        raise ValueError(f"priority {priority} is not 1, 2 or 3")
    return priority - 1


class WrappingKey(BaseModel):
    """A key-encryption key: its id, stored beside every record it wraps, and its bytes.

    The bytes are ``SecretBytes``, so no repr, log line or error message shows them.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    secret: SecretBytes


class ResidentSettings(_Subsystem):
    """The keys that wrap residents' data keys (envelope encryption, ``cloud.residents``).

    The first key is current: new records and re-keying use it. The others are older
    keys, kept so that records wrapped before a rotation can still be opened until they
    are re-keyed. No keys is allowed: the rest of the cloud runs, and storing personal
    data is refused where it is attempted.
    """

    model_config = SettingsConfigDict(env_prefix="ANJU_RESIDENT_")

    keys: Annotated[tuple[WrappingKey, ...], NoDecode, Form(_KEYS_FORM, secret=True)] = ()

    @property
    def current(self) -> WrappingKey | None:
        """The key that wraps new records, or None when there are no keys."""
        return self.keys[0] if self.keys else None

    @field_validator("keys", mode="before")
    @classmethod
    def _parse(cls, value: object) -> object:
        return _wrapping_keys(value) if isinstance(value, str) else value


def _wrapping_keys(text: str) -> tuple[WrappingKey, ...]:
    """``ID:BASE64,...`` as keys, in order; raises ValueError naming every bad entry.

    Messages name entries by position and ids, which are not secret, and never quote
    what follows an id or an entry without one (it may be key material).
    """
    keys: list[WrappingKey] = []
    seen: set[str] = set()
    mistakes: list[str] = []
    for number, entry in enumerate(_comma_separated(text), start=1):
        key_id, colon, encoded = (part.strip() for part in entry.partition(":"))
        secret = _base64(encoded)
        if not colon or not WRAPPING_KEY_ID.match(key_id):
            mistakes.append(f"entry {number} does not start with a valid key id and ':'")
        elif key_id in seen:
            mistakes.append(f"key id {key_id!r} is given twice")
        elif secret is None:
            mistakes.append(f"key {key_id!r} is not base64")
        elif len(secret) != WRAPPING_KEY_BYTES:
            mistakes.append(f"key {key_id!r} is {len(secret)} bytes, not {WRAPPING_KEY_BYTES}")
        else:
            keys.append(WrappingKey(id=key_id, secret=SecretBytes(secret)))
        seen.add(key_id)
    if mistakes:
        raise ValueError("; ".join(mistakes))
    return tuple(keys)


def _base64(text: str) -> bytes | None:
    """``text`` decoded as standard or url-safe base64, padding optional; None if neither."""
    unpadded = text.rstrip("=").translate(_URL_SAFE)
    try:
        return base64.b64decode(unpadded + "=" * (-len(unpadded) % 4), validate=True)
    except binascii.Error:
        return None


def _broker_url(value: object) -> object:
    """A broker URL parsed, for a ``mode="before"`` validator; other values as they are."""
    if not isinstance(value, str):
        return value
    try:
        return parse_broker_url(value)
    except SchemaError as exc:
        raise ValueError(str(exc).replace(value, _without_password(value))) from None


_GatewayUrl = Annotated[
    str | None,
    Form("mqtts://host[:port] without user or password, such as mqtts://mqtt.example.cn", True),
]
_PemFile = Annotated[Path | None, Form("the path of a PEM file")]


class BrokerSettings(_Subsystem):
    """How the API gives each gateway its own broker credentials (``cloud.provisioning``).

    The cloud manages the broker's accounts through Mosquitto's dynamic-security plugin
    with ``admin_url``'s account; gateways are told ``gateway_url`` (password) or
    ``gateway_cert_url`` (client certificate) and handed ``server_ca_file`` to check the
    broker with. Certificates are signed with the client CA. Every field may be unset:
    the rest of the cloud runs, and the credential routes answer 503 naming what is
    missing (``cloud.provisioning.BrokerNotConfigured``).
    """

    model_config = SettingsConfigDict(env_prefix="ANJU_BROKER_")

    admin_url: Annotated[
        BrokerAddress | None,
        Form("mqtt(s)://user:password@host[:port], the dynamic-security admin", secret=True),
    ] = None
    admin_ca_file: _PemFile = None
    """The CA that signed the broker's certificate, for ``admin_url`` over mqtts."""
    gateway_url: _GatewayUrl = None
    """Where password gateways connect, as written into their config."""
    gateway_cert_url: _GatewayUrl = None
    """The certificate listener; unset, ``gateway_url``."""
    server_ca_file: _PemFile = None
    """Handed to gateways as their ``tls_ca_file``."""
    client_ca_cert_file: _PemFile = None
    client_ca_key_file: _PemFile = None
    cert_days: Annotated[int, Field(ge=1, le=3650), Form("whole days, 1-3650")] = 397
    """Validity of a gateway certificate; 397 days is the web PKI's ceiling."""

    @property
    def certificate_url(self) -> str | None:
        """The URL certificate gateways connect to."""
        return self.gateway_cert_url or self.gateway_url

    @field_validator("admin_url", mode="before")
    @classmethod
    def _admin(cls, value: object) -> object:
        return _broker_url(value)

    @field_validator("gateway_url", "gateway_cert_url")
    @classmethod
    def _gateway(cls, value: str | None) -> str | None:
        address = _broker_url(value)
        if isinstance(address, BrokerAddress) and (address.username or address.password):
            raise ValueError("gateways get their own user and password; leave them out")
        return value


class ProfileSettings(_Subsystem):
    """The device profiles the cloud knows: devices are checked against them when
    registered, and the ones a gateway uses are pushed to it with its devices."""

    model_config = SettingsConfigDict(env_prefix="ANJU_PROFILE_")

    dir: Annotated[Path | None, Form("a folder of <kind>/<id>.yaml profiles")] = None
    """Unset: the profiles shipped with Anju, as for the command line."""

    @property
    def root(self) -> Path:
        """The profile folder in use."""
        if self.dir is not None:
            return self.dir
        return Path(schemas.__file__).resolve().parents[1] / "device_profiles"


class MqttSettings(_Subsystem):
    """How the cloud's own workers (ingest, the config pusher) trust an ``mqtts://``
    broker. Webhook deliveries keep the system's CAs, so a private broker CA is named
    here rather than through ``SSL_CERT_FILE``, which would replace them for the whole
    process."""

    model_config = SettingsConfigDict(env_prefix="ANJU_MQTT_")

    ca_file: Annotated[
        Path | None, Form("a PEM file of the CA that signed the broker's certificate")
    ] = None
    """Unset: the system's CAs."""


class CloudSettings(BaseModel):
    """Everything ``anju cloud run`` and ``anju cloud ingest`` need.

    ``mqtt`` is ``None`` when ``ANJU_MQTT_URL`` is unset; ``broker`` then raises
    ``SettingsError`` for the callers that need it (the API alone does not). Built
    directly (as tests do), the subsystems not given are at their defaults.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    database_url: str
    mqtt: BrokerAddress | None = None
    api: ApiSettings = Field(default_factory=ApiSettings.defaults)
    ingest: IngestSettings = Field(default_factory=IngestSettings.defaults)
    storage: StorageSettings = Field(default_factory=StorageSettings.defaults)
    webhooks: WebhookSettings = Field(default_factory=WebhookSettings.defaults)
    queue: QueueSettings = Field(default_factory=QueueSettings.defaults)
    residents: ResidentSettings = Field(default_factory=ResidentSettings.defaults)
    provisioning: BrokerSettings = Field(default_factory=BrokerSettings.defaults)
    profiles: ProfileSettings = Field(default_factory=ProfileSettings.defaults)
    mqtt_tls: MqttSettings = Field(default_factory=MqttSettings.defaults)

    @property
    def broker(self) -> BrokerAddress:
        """The MQTT broker; raises SettingsError when ``ANJU_MQTT_URL`` was not given."""
        if self.mqtt is None:
            raise SettingsError(MQTT_URL_VAR, "is not set", MQTT_URL_FORM)
        return self.mqtt

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, url: str) -> str:
        return check_database_url(url)


def _subsystems() -> dict[str, type[_Subsystem]]:
    """``CloudSettings``' subsystem fields and their models."""
    return {
        name: field.annotation
        for name, field in CloudSettings.model_fields.items()
        if isinstance(field.annotation, type) and issubclass(field.annotation, _Subsystem)
    }


def _hostname() -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", socket.gethostname())[:32]
    return cleaned or "host"


def _without_password(url: str) -> str:
    """``url`` with its password, if any, replaced by ``***``, for error messages."""
    head, at, rest = url.rpartition("@")
    scheme, sep, userinfo = head.partition("://")
    if not at or not sep or ":" not in userinfo:
        return url
    return f"{scheme}://{userinfo.split(':', 1)[0]}:***@{rest}"


def check_database_url(url: str, *, variable: str = DATABASE_URL_VAR) -> str:
    """Return ``url`` if it is a PostgreSQL URL, else raise SettingsError naming ``variable``."""
    if not re.match(r"^postgres(ql)?://[^/]*(/[^/?#]+)?([?#].*)?$", url):
        raise SettingsError(
            variable, f"{_without_password(url)!r} is not a PostgreSQL URL", DATABASE_URL_FORM
        )
    return url


def load_database_url(environ: Mapping[str, str] | None = None) -> str:
    """The database URL from ``ANJU_DATABASE_URL``; raises SettingsError if unset or bad."""
    env = os.environ if environ is None else environ
    url = env.get(DATABASE_URL_VAR, "").strip()
    if not url:
        raise SettingsError(DATABASE_URL_VAR, "is not set", DATABASE_URL_FORM)
    return check_database_url(url)


def _load_broker(environ: Mapping[str, str], *, required: bool) -> BrokerAddress | None:
    """The broker of ``ANJU_MQTT_URL``; None when unset and not ``required``."""
    url = environ.get(MQTT_URL_VAR, "").strip()
    if not url:
        if required:
            raise SettingsError(MQTT_URL_VAR, "is not set", MQTT_URL_FORM)
        return None
    try:
        return parse_broker_url(url)
    except SchemaError as exc:
        # The message quotes the URL and ends with the form, which SettingsError adds.
        problem = str(exc).replace(url, _without_password(url))
        problem = re.sub(rf"[:;] expected {re.escape(MQTT_URL_FORM)}$", "", problem)
        raise SettingsError(MQTT_URL_VAR, problem, MQTT_URL_FORM) from None


def _misspelt(environ: Mapping[str, str]) -> list[SettingsProblem]:
    """Set variables under a subsystem's prefix that are no setting but close to one."""
    problems = []
    for model in _subsystems().values():
        prefix = model.variable("")
        names = [name.upper() for name in model.model_fields]
        for variable in sorted(v for v, value in environ.items() if value and v.startswith(prefix)):
            suffix = variable.removeprefix(prefix)
            close = difflib.get_close_matches(suffix, names, n=1, cutoff=_TYPO_CUTOFF)
            if suffix not in names and close:
                meant = prefix + close[0]
                problems.append(
                    SettingsProblem(
                        variable, f"is not a setting (a misspelt {meant}?)", f"{meant}, or unset"
                    )
                )
    return problems


def load_settings(
    environ: Mapping[str, str] | None = None, *, require_mqtt: bool = True
) -> CloudSettings:
    """Read and validate every ``ANJU_*`` variable of the cloud tier from ``environ``
    (``os.environ`` when None; nothing else is read when it is given).

    Raises one SettingsError listing every variable that is missing
    (``ANJU_MQTT_URL`` only when ``require_mqtt``), malformed, contradicted by another
    or a likely misspelling of a setting, each with the form it expects: an operator
    fixes them all before the next start rather than one per start.
    """
    env = os.environ if environ is None else environ
    problems: list[SettingsProblem] = []

    def read(reader: Callable[[], object]) -> object:
        try:
            return reader()
        except SettingsError as exc:
            problems.extend(exc.problems)
            return None

    values: dict[str, Any] = {
        "database_url": read(lambda: load_database_url(env)),
        "mqtt": read(lambda: _load_broker(env, required=require_mqtt)),
    }
    for name, model in _subsystems().items():
        values[name] = read(partial(model.from_environ, env))
    problems += _misspelt(env)
    if problems:
        raise SettingsError.of(problems)
    return CloudSettings.model_validate(values)
