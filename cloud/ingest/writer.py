"""One MQTT message in, one database transaction out.

``BatchWriter.write(topic, payload)`` guarantees, when it returns:

- the batch's rows are committed exactly once: ``ingested_batches`` gets the batch key
  (gateway, spool epoch, channel, batch seq) in the same transaction as the readings
  (binary COPY), the events and the incidents the rules opened or joined from them,
  so a batch resent after a lost acknowledgement is recognised and stores nothing;
- items of devices not registered behind that gateway are quarantined (one row per
  device, reason naming it) while the rest of the batch lands;
- a message that can never be stored as sent (bad topic, malformed payload, header
  that contradicts the topic, unknown gateway, values the database refuses) is
  quarantined with the reason and the raw payload (at most 64 KiB kept);

so the caller may acknowledge the message. When it raises ``StorageError`` (typically
``StorageUnavailable``), nothing was committed and the message must not be
acknowledged: the broker redelivers it.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import msgspec
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from cloud.errors import RejectedPayload, StorageError
from cloud.incidents import open_or_join
from cloud.ingest.counters import BatchOutcome
from cloud.rules.drafts import DeviceContext
from cloud.rules.emergency import evaluate
from cloud.storage.database import rejects_input, storage_errors
from cloud.storage.sql import queries
from schemas.errors import WireError
from schemas.topics import Channel, TopicAddress, parse_topic
from schemas.wire import Event, EventBatch, Reading, TelemetryBatch, decode, encode

log = logging.getLogger(__name__)

QUARANTINE_PAYLOAD_LIMIT: Final = 64 * 1024
"""Bytes of a quarantined payload kept; the original size is recorded beside them."""

_READING_TYPES: Final = ("timestamptz", "text", "text", "float8", "text", "int8")

Batch = TelemetryBatch | EventBatch


@dataclass(frozen=True, slots=True)
class _Registration:
    id: str
    gateway_id: str
    kind: str
    status: str
    building: str | None
    unit: str | None
    community_id: int


def decode_message(topic: str, payload: bytes) -> tuple[TopicAddress, Batch]:
    """Parse the topic and the payload of an ingest message and check they agree.

    Pure: touches no database. Raises RejectedPayload (with the topic, and the gateway
    once known) for a topic outside the contract, a channel ingest does not store, a
    malformed payload, or a header whose gateway or community differ from the topic's.
    """
    try:
        address = parse_topic(topic)
    except WireError as exc:
        raise RejectedPayload(f"bad topic: {exc.reason}", topic=topic) from None
    batch: Batch
    try:
        if address.channel is Channel.TELEMETRY:
            batch = decode(payload, TelemetryBatch, topic=topic)
        elif address.channel is Channel.EVENTS:
            batch = decode(payload, EventBatch, topic=topic)
        else:
            raise RejectedPayload(
                f"channel {address.channel} is not ingested", topic=topic, gateway=address.gateway
            )
    except WireError as exc:
        raise RejectedPayload(
            f"malformed {address.channel} payload: {exc.reason}",
            topic=topic,
            gateway=address.gateway,
        ) from None
    for field, in_payload, in_topic in (
        ("gateway", batch.gateway, address.gateway),
        ("community", batch.community, address.community),
    ):
        if in_payload != in_topic:
            raise RejectedPayload(
                f"payload {field} {in_payload!r} does not match the topic's {in_topic!r}",
                topic=topic,
                gateway=address.gateway,
                batch=(batch.spool_epoch, batch.batch_seq),
            )
    return address, batch


class BatchWriter:
    """Stores ingest messages through a connection pool; see the module docstring.

    The pool's connections must be in autocommit mode (transactions are explicit).
    ``connect_timeout_s`` bounds the wait for a pooled connection.
    """

    def __init__(self, pool: AsyncConnectionPool[Any], *, connect_timeout_s: float = 10.0) -> None:
        self._pool = pool
        self._connect_timeout_s = connect_timeout_s

    async def write(self, topic: str, payload: bytes) -> BatchOutcome:
        """Store one message; see the module docstring for what is guaranteed.

        Raises StorageError (nothing committed, do not acknowledge) when the database
        is unreachable or fails for a reason that is not the input's fault.
        """
        try:
            address, batch = decode_message(topic, payload)
        except RejectedPayload as exc:
            return await self._reject(topic, exc.gateway, exc.message, payload)
        try:
            return await self._store(topic, address, batch)
        except RejectedPayload as exc:
            return await self._reject(topic, exc.gateway, exc.message, payload)
        except StorageError as exc:
            if not rejects_input(exc):
                raise
            reason = f"database refused the batch: {exc.message}"
            return await self._reject(topic, address.gateway, reason, payload)

    async def _reject(
        self, topic: str, gateway: str | None, reason: str, payload: bytes
    ) -> BatchOutcome:
        log.warning("quarantining message on %s: %s", topic, reason)
        async with self._connection() as conn:
            await _quarantine(conn, topic=topic, gateway=gateway, reason=reason, payload=payload)
        return BatchOutcome("quarantined", quarantined=1)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        # Also wraps the transaction's own COMMIT or ROLLBACK, which fail with psycopg
        # errors of their own when the connection drops mid-batch.
        with storage_errors("connect"):
            async with self._pool.connection(timeout=self._connect_timeout_s) as conn:
                yield conn

    async def _store(self, topic: str, address: TopicAddress, batch: Batch) -> BatchOutcome:
        async with self._connection() as conn, conn.transaction():
            await _check_gateway(conn, topic, address)
            if not await _record_batch(conn, address, batch):
                return BatchOutcome("duplicate")
            registered = await _registrations(conn, {item.device for item in batch.items})
            accepted, withheld = _split(batch, address.gateway, registered)
            quarantined = 0
            for device, (reason, items) in withheld.items():
                kept = msgspec.structs.replace(batch, items=items)
                await _quarantine(
                    conn, topic=topic, gateway=address.gateway, reason=reason, payload=encode(kept)
                )
                log.warning("quarantined %d items of device %s: %s", len(items), device, reason)
                quarantined += 1
            if not accepted:
                return BatchOutcome("stored", quarantined=quarantined)
            await _touch(conn, address.gateway, accepted)
            if isinstance(batch, TelemetryBatch):
                readings = [item for item in accepted if isinstance(item, Reading)]
                await _copy_readings(conn, address.gateway, readings)
                return BatchOutcome("stored", readings=len(readings), quarantined=quarantined)
            events = [item for item in accepted if isinstance(item, Event)]
            opened, joined = await _store_events(conn, address.gateway, events, registered)
            return BatchOutcome(
                "stored",
                events=len(events),
                quarantined=quarantined,
                incidents_opened=opened,
                incidents_joined=joined,
            )


async def _check_gateway(conn: AsyncConnection[Any], topic: str, address: TopicAddress) -> None:
    with storage_errors("gateway_for_ingest"):
        cur = await conn.execute(queries()["gateway_for_ingest"], {"gateway": address.gateway})
        row = await cur.fetchone()
    if row is None:
        raise RejectedPayload("unknown gateway", topic=topic, gateway=address.gateway)
    community, status = row
    if community != address.community:
        raise RejectedPayload(
            f"gateway is registered under {community!r}, not {address.community!r}",
            topic=topic,
            gateway=address.gateway,
        )
    if status != "active":
        raise RejectedPayload(f"gateway is {status}", topic=topic, gateway=address.gateway)


async def _record_batch(conn: AsyncConnection[Any], address: TopicAddress, batch: Batch) -> bool:
    with storage_errors("record_batch"):
        cur = await conn.execute(
            queries()["record_batch"],
            {
                "gateway": address.gateway,
                "spool_epoch": batch.spool_epoch,
                "channel": str(address.channel),
                "batch_seq": batch.batch_seq,
                "item_count": len(batch.items),
            },
        )
        return await cur.fetchone() is not None


async def _registrations(conn: AsyncConnection[Any], devices: set[str]) -> dict[str, _Registration]:
    with storage_errors("devices_for_ingest"):
        cur = await conn.execute(queries()["devices_for_ingest"], {"devices": sorted(devices)})
        rows = await cur.fetchall()
    return {row[0]: _Registration(*row) for row in rows}


def _split(
    batch: Batch, gateway: str, registered: dict[str, _Registration]
) -> tuple[list[Reading | Event], dict[str, tuple[str, list[Any]]]]:
    """Items of devices registered (and active) behind ``gateway``, and the rest by device."""
    accepted: list[Reading | Event] = []
    withheld_items: dict[str, list[Any]] = defaultdict(list)
    for item in batch.items:
        registration = registered.get(item.device)
        if (
            registration is not None
            and registration.gateway_id == gateway
            and registration.status == "active"
        ):
            accepted.append(item)
        else:
            withheld_items[item.device].append(item)
    withheld: dict[str, tuple[str, list[Any]]] = {}
    for device, items in withheld_items.items():
        registration = registered.get(device)
        if registration is None:
            problem = f"unknown device {device!r}: not registered"
        elif registration.gateway_id != gateway:
            problem = (
                f"device {device!r} is registered behind gateway "
                f"{registration.gateway_id!r}, not {gateway!r}"
            )
        else:
            problem = f"device {device!r} is {registration.status}"
        withheld[device] = (
            f"{problem} ({len(items)} items of batch {batch.spool_epoch}/{batch.batch_seq})",
            items,
        )
    return accepted, withheld


async def _touch(
    conn: AsyncConnection[Any], gateway: str, items: Sequence[Reading | Event]
) -> None:
    latest: dict[str, datetime] = {}
    for item in items:
        if item.device not in latest or item.ts > latest[item.device]:
            latest[item.device] = item.ts
    with storage_errors("touch_devices"):
        await conn.execute(
            queries()["touch_devices"],
            {"devices": list(latest), "seen": list(latest.values())},
        )
    with storage_errors("touch_gateway"):
        await conn.execute(queries()["touch_gateway"], {"gateway": gateway})


async def _copy_readings(
    conn: AsyncConnection[Any], gateway: str, readings: Sequence[Reading]
) -> None:
    with storage_errors("copy_readings"):
        async with conn.cursor() as cur, cur.copy(queries()["copy_readings"]) as copy:
            copy.set_types(list(_READING_TYPES))
            for reading in readings:
                await copy.write_row(
                    (
                        reading.ts,
                        reading.device,
                        reading.metric.value,
                        reading.value,
                        gateway,
                        reading.seq,
                    )
                )


async def _store_events(
    conn: AsyncConnection[Any],
    gateway: str,
    events: Sequence[Event],
    registered: dict[str, _Registration],
) -> tuple[int, int]:
    """Insert ``events``, then run the rules on each; return incidents (opened, joined)."""
    params = [
        {
            "ts": event.ts,
            "device": event.device,
            "gateway": gateway,
            "seq": event.seq,
            "type": event.type.value,
            "severity": event.severity.value,
            "data": msgspec.json.encode(event.data).decode(),
        }
        for event in events
    ]
    event_ids: list[int] = []
    with storage_errors("insert_event"):
        async with conn.cursor() as cur:
            await cur.executemany(queries()["insert_event"], params, returning=True)
            while True:
                row = await cur.fetchone()
                if row is not None:
                    event_ids.append(int(row[0]))
                if not cur.nextset():
                    break
    opened = joined = 0
    for event, event_id in zip(events, event_ids, strict=True):
        registration = registered[event.device]
        draft = evaluate(
            event,
            DeviceContext(
                device_id=registration.id,
                kind=registration.kind,
                community_id=registration.community_id,
                building=registration.building,
                unit=registration.unit,
            ),
        )
        if draft is None:
            continue
        outcome = await open_or_join(conn, draft, event_id=event_id, event_ts=event.ts)
        if outcome.opened:
            opened += 1
        else:
            joined += 1
    return opened, joined


async def _quarantine(
    conn: AsyncConnection[Any], *, topic: str, gateway: str | None, reason: str, payload: bytes
) -> None:
    with storage_errors("insert_quarantine"):
        await conn.execute(
            queries()["insert_quarantine"],
            {
                "topic": topic,
                "gateway": gateway,
                "reason": reason,
                "payload": payload[:QUARANTINE_PAYLOAD_LIMIT],
                "payload_size": len(payload),
            },
        )
