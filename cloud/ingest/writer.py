"""A group of MQTT messages in, one database transaction out.

``BatchWriter.write(group)`` takes messages already decoded by ``decode_message`` (pure,
so the consumer decodes the next group while this one is written) and guarantees, when
it returns one outcome per message:

- every batch's rows are committed exactly once: ``ingested_batches`` gets each batch
  key (gateway, spool epoch, channel, batch seq) in the same transaction as the readings
  (one binary COPY for the whole group), the events, the incidents the rules opened or
  joined from them and the devices' last-seen times, so a batch resent after a lost
  acknowledgement is recognised and stores nothing;
- items of devices not registered behind their gateway are quarantined (one row per
  device and batch, the reason naming it) while the rest of the batch lands;
- a message that can never be stored as sent (bad topic, malformed payload, header that
  contradicts the topic, unknown gateway, values the database refuses) is quarantined
  with the reason and the raw payload (at most 64 KiB kept);

so the caller may acknowledge every message of the group. When it raises
``StorageError`` nothing was committed and no message may be acknowledged: the broker
redelivers them.

Values the database refuses (SQLSTATE classes 22 and 23) abort the whole group's
transaction without saying which message held them, so the group is then written one
message at a time, and only the message at fault is quarantined.
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict, defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from cloud.errors import StorageError
from cloud.incidents import IncidentDraft, open_or_join
from cloud.ingest.counters import BatchOutcome
from cloud.rules.config import RuleSet
from cloud.rules.context import DeviceContext
from cloud.rules.engine import after_opening, evaluate
from cloud.settings import QueueSettings
from cloud.storage.database import rejects_input, storage_errors
from cloud.storage.sql import queries
from schemas.errors import WireError
from schemas.topics import Channel, TopicAddress, parse_topic
from schemas.wire import Event, EventBatch, Reading, TelemetryBatch, decode, encode

log = logging.getLogger(__name__)

QUARANTINE_PAYLOAD_LIMIT: Final = 64 * 1024
"""Bytes of a quarantined payload kept; the original size is recorded beside them."""

LATE_AFTER: Final = timedelta(hours=1)
"""Readings older than this when stored get their hour noted (``note_late_hours``): the
TimescaleDB path's refresh policy stops an hour short of now, so those hours are the
ones real-time aggregation no longer covers."""
_READING_TYPES: Final = ("text", "text", "timestamptz", "float8", "text", "int8")
"""Column types of ``copy_readings``, in its column order (device, metric, ts first, so
rows sorted as tuples follow the (device_id, metric, ts) index)."""

_CONFLICTS: Final = frozenset({"40P01", "40001"})
"""Deadlock detected, serialization failure: another transaction won, retrying helps."""
_CONFLICT_ATTEMPTS: Final = 3
_LOGGED_KINDS_KEPT: Final = 10_000

Batch = TelemetryBatch | EventBatch
BatchKey = tuple[str, str, str, int]
"""(gateway, spool epoch, channel, batch seq): what ``ingested_batches`` is keyed by."""


@dataclass(frozen=True, slots=True)
class Decoded:
    """One message as ``decode_message`` left it: a batch to store, or why it cannot be."""

    topic: str
    payload: bytes
    address: TopicAddress | None = None
    batch: Batch | None = None
    rejection: str | None = None

    @property
    def carries_events(self) -> bool:
        """Whether the message is on an events topic: its group must not wait."""
        return isinstance(self.batch, EventBatch) or (
            self.address is not None and self.address.channel is Channel.EVENTS
        )

    @property
    def items(self) -> int:
        """Readings or events in the batch (0 for a rejected message)."""
        return len(self.batch.items) if self.batch is not None else 0

    @property
    def gateway(self) -> str | None:
        """The gateway the topic names, once the topic parsed."""
        return self.address.gateway if self.address is not None else None


def decode_message(topic: str, payload: bytes) -> Decoded:
    """Parse the topic and the payload of an ingest message and check they agree.

    Pure: touches no database. Never raises: a topic outside the contract, a channel
    ingest does not store, a malformed payload, or a header whose gateway or community
    differ from the topic's yields a ``Decoded`` with the ``rejection`` reason.
    """
    try:
        address = parse_topic(topic)
    except WireError as exc:
        return Decoded(topic, payload, rejection=f"bad topic: {exc.reason}")
    batch: Batch
    try:
        if address.channel is Channel.TELEMETRY:
            batch = decode(payload, TelemetryBatch, topic=topic)
        elif address.channel is Channel.EVENTS:
            batch = decode(payload, EventBatch, topic=topic)
        else:
            return Decoded(
                topic, payload, address, rejection=f"channel {address.channel} is not ingested"
            )
    except WireError as exc:
        return Decoded(
            topic, payload, address, rejection=f"malformed {address.channel} payload: {exc.reason}"
        )
    for name, in_payload, in_topic in (
        ("gateway", batch.gateway, address.gateway),
        ("community", batch.community, address.community),
    ):
        if in_payload != in_topic:
            reason = (
                f"payload {name} {in_payload!r} does not match the topic's {in_topic!r} "
                f"(batch {batch.spool_epoch}/{batch.batch_seq})"
            )
            return Decoded(topic, payload, address, rejection=reason)
    return Decoded(topic, payload, address, batch)


LAST_SEEN_STEP_S: Final = 10
"""Devices' and gateways' ``last_seen`` move in steps of at least this many seconds."""

_Misplaced = dict[tuple[str, str], tuple[str | None, str | None]]
"""(device, gateway) pairs that may not be stored: the device's registered gateway and
status, both None for an unknown device."""


@dataclass(slots=True)
class _Quarantine:
    topic: str
    gateway: str | None
    reason: str
    payload: bytes
    kind: str = ""
    """The same for every repeat of one problem (a device unknown behind a gateway): the
    first is logged, the rest only counted."""


@dataclass(slots=True)
class _Group:
    """What one transaction writes, gathered before the first statement that writes."""

    outcomes: list[BatchOutcome | None]
    quarantine: list[_Quarantine] = field(default_factory=list)
    readings: list[tuple[str, str, datetime, float, str, int]] = field(default_factory=list)
    events: list[tuple[int, str, list[Event]]] = field(default_factory=list)
    latest: dict[str, datetime] = field(default_factory=dict)
    gateways: set[str] = field(default_factory=set)

    def reject(self, index: int, message: Decoded, reason: str) -> None:
        kind = f"{message.gateway or message.topic}: {reason.split(' (', 1)[0][:80]}"
        self.quarantine.append(
            _Quarantine(message.topic, message.gateway, reason, message.payload, kind)
        )
        self.outcomes[index] = BatchOutcome("quarantined", quarantined=1)

    def seen(self, items: Iterable[Reading | Event]) -> None:
        latest = self.latest
        for item in items:
            known = latest.get(item.device)
            if known is None or item.ts > known:
                latest[item.device] = item.ts


class BatchWriter:
    """Stores groups of ingest messages through a connection pool; see the module docstring.

    The pool's connections must be in autocommit mode (transactions are explicit).
    ``queue`` times the escalation of incidents the rules open (its defaults when None);
    ``connect_timeout_s`` bounds the wait for a pooled connection.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        rules: RuleSet,
        *,
        queue: QueueSettings | None = None,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self._pool = pool
        self._rules = rules
        self._queue = queue
        self._logged: OrderedDict[str, None] = OrderedDict()
        self._connect_timeout_s = connect_timeout_s

    async def write(self, group: Sequence[Decoded]) -> list[BatchOutcome]:
        """Store ``group`` in one transaction; one outcome per message, in order.

        Raises StorageError (nothing committed, acknowledge nothing) when the database
        is unreachable or fails for a reason that is not the input's fault.
        """
        try:
            return await self._store_retrying(group)
        except StorageError as exc:
            if not rejects_input(exc):
                raise
            if len(group) > 1:
                log.info(
                    "group of %d refused (%s); writing its messages one by one", len(group), exc
                )
                return [outcome for message in group for outcome in await self.write([message])]
            return await self.quarantine(group[0], f"database refused the batch: {exc.message}")

    async def _store_retrying(self, group: Sequence[Decoded]) -> list[BatchOutcome]:
        """``_store``, tried again at once when the database chose it as a deadlock or
        serialization victim: the transaction rolled back whole, and giving up would cost
        a reconnect and the redelivery of every unacknowledged message."""
        for attempt in range(1, _CONFLICT_ATTEMPTS + 1):
            try:
                return await self._store(group)
            except StorageError as exc:
                if exc.sqlstate not in _CONFLICTS or attempt == _CONFLICT_ATTEMPTS:
                    raise
                log.info("group of %d lost a conflict (%s); trying again", len(group), exc)
        raise AssertionError("unreachable")

    async def quarantine(self, message: Decoded, reason: str) -> list[BatchOutcome]:
        """Quarantine ``message`` alone with ``reason``, in a transaction of its own."""
        log.warning("quarantining message on %s: %s", message.topic, reason)
        async with self._connection() as conn:
            await _insert_quarantine(
                conn, [_Quarantine(message.topic, message.gateway, reason, message.payload)]
            )
        return [BatchOutcome("quarantined", quarantined=1)]

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        # Also wraps the transaction's own COMMIT or ROLLBACK, which fail with psycopg
        # errors of their own when the connection drops mid-group.
        with storage_errors("connect"):
            async with self._pool.connection(timeout=self._connect_timeout_s) as conn:
                yield conn

    async def _store(self, messages: Sequence[Decoded]) -> list[BatchOutcome]:
        group = _Group(outcomes=[None] * len(messages))
        async with self._connection() as conn, conn.transaction():
            candidates = await _check_gateways(conn, messages, group)
            fresh = await _record_batches(conn, messages, candidates, group)
            misplaced = await _misplaced(conn, [messages[index] for index in fresh])
            for index in fresh:
                _split(index, messages[index], misplaced, group)
            await _insert_quarantine(conn, group.quarantine)
            await copy_readings(conn, group.readings)
            if group.events:
                await _store_events(conn, self._rules, self._queue, group)
            # Last, so the rows this writes (shared with other workers' groups) stay
            # locked only for the commit.
            await _touch(conn, group)
        for row in group.quarantine:
            self._log_once(row)
        duplicate = BatchOutcome("duplicate")
        return [outcome or duplicate for outcome in group.outcomes]

    def _log_once(self, row: _Quarantine) -> None:
        """Log the first quarantine of each kind; repeats (an unknown device reporting
        every second) are only counted, in ``IngestCounters.quarantined``."""
        if row.kind in self._logged:
            return
        self._logged[row.kind] = None
        while len(self._logged) > _LOGGED_KINDS_KEPT:
            self._logged.popitem(last=False)
        log.warning(
            "quarantined on %s: %s (repeats are counted, not logged)", row.topic, row.reason
        )


def _batch(message: Decoded) -> Batch:
    assert message.batch is not None, "only decoded messages reach this point"
    return message.batch


async def _check_gateways(
    conn: AsyncConnection[Any], messages: Sequence[Decoded], group: _Group
) -> list[int]:
    """Indexes of the messages whose gateway is registered, active and in the topic's community."""
    names = sorted({m.gateway for m in messages if m.batch is not None and m.gateway is not None})
    known: dict[str, tuple[str, str]] = {}
    if names:
        with storage_errors("gateways_for_ingest"):
            cur = await conn.execute(queries()["gateways_for_ingest"], {"gateways": names})
            known = {row[0]: (row[1], row[2]) for row in await cur.fetchall()}
    candidates: list[int] = []
    for index, message in enumerate(messages):
        if message.rejection is not None or message.address is None:
            group.reject(index, message, message.rejection or "undecodable message")
            continue
        registration = known.get(message.address.gateway)
        if registration is None:
            group.reject(index, message, "unknown gateway")
        elif registration[0] != message.address.community:
            reason = (
                f"gateway is registered under {registration[0]!r}, "
                f"not {message.address.community!r}"
            )
            group.reject(index, message, reason)
        elif registration[1] != "active":
            group.reject(index, message, f"gateway is {registration[1]}")
        else:
            candidates.append(index)
    return candidates


def _key(message: Decoded) -> BatchKey:
    assert message.address is not None
    batch = _batch(message)
    return (
        message.address.gateway,
        batch.spool_epoch,
        str(message.address.channel),
        batch.batch_seq,
    )


async def _record_batches(
    conn: AsyncConnection[Any], messages: Sequence[Decoded], candidates: list[int], group: _Group
) -> list[int]:
    """Record the candidates' batch keys; return the indexes of batches not seen before.

    A key twice in one group (a redelivery racing its original) counts once: the first.
    Keys are inserted in sorted order so two workers' groups never wait on each other
    in a cycle.
    """
    first: dict[BatchKey, int] = {}
    for index in candidates:
        first.setdefault(_key(messages[index]), index)
    if not first:
        return []
    keys = sorted(first)
    with storage_errors("record_batches"):
        cur = await conn.execute(
            queries()["record_batches"],
            {
                "gateways": [k[0] for k in keys],
                "epochs": [k[1] for k in keys],
                "channels": [k[2] for k in keys],
                "seqs": [k[3] for k in keys],
                "counts": [messages[first[k]].items for k in keys],
            },
        )
        inserted = {(row[0], row[1], row[2], int(row[3])) for row in await cur.fetchall()}
    return sorted(first[key] for key in inserted)


async def _misplaced(conn: AsyncConnection[Any], messages: Sequence[Decoded]) -> _Misplaced:
    pairs = {
        (item.device, m.address.gateway) for m in messages if m.address for item in _batch(m).items
    }
    if not pairs:
        return {}
    with storage_errors("devices_out_of_place"):
        cur = await conn.execute(
            queries()["devices_out_of_place"],
            {"pairs": msgspec.json.encode(sorted(pairs)).decode()},
        )
        rows = await cur.fetchall()
    return {(row[0], row[1]): (row[2], row[3]) for row in rows}


async def _contexts(
    conn: AsyncConnection[Any], events: Sequence[tuple[int, str, list[Event]]]
) -> dict[str, DeviceContext]:
    """What the rules know of each device whose events the group stores."""
    devices = sorted({event.device for _, _, batch in events for event in batch})
    with storage_errors("devices_for_rules"):
        cur = await conn.execute(queries()["devices_for_rules"], {"devices": devices})
        rows = await cur.fetchall()
    return {row[0]: DeviceContext(*row) for row in rows}


def _split(index: int, message: Decoded, misplaced: _Misplaced, group: _Group) -> None:
    """File the items of registered, active devices behind the batch's gateway for writing;
    quarantine the rest, one row per device naming the reason."""
    batch = _batch(message)
    gateway = batch.gateway
    accepted: list[Any] = []
    withheld: dict[str, list[Any]] = defaultdict(list)
    if misplaced:
        for item in batch.items:
            if (item.device, gateway) in misplaced:
                withheld[item.device].append(item)
            else:
                accepted.append(item)
    else:
        accepted = list(batch.items)
    for device, items in withheld.items():
        registered_gateway, status = misplaced[(device, gateway)]
        if registered_gateway is None:
            problem = f"unknown device {device!r}: not registered"
        elif registered_gateway != gateway:
            problem = (
                f"device {device!r} is registered behind gateway "
                f"{registered_gateway!r}, not {gateway!r}"
            )
        else:
            problem = f"device {device!r} is {status}"
        reason = f"{problem} ({len(items)} items of batch {batch.spool_epoch}/{batch.batch_seq})"
        kept = encode(msgspec.structs.replace(batch, items=items))
        group.quarantine.append(
            _Quarantine(message.topic, gateway, reason, kept, f"{gateway}: {problem}")
        )
    group.seen(accepted)
    if accepted:
        group.gateways.add(gateway)
    if isinstance(batch, TelemetryBatch):
        group.readings.extend(
            (r.device, r.metric.value, r.ts, r.value, gateway, r.seq) for r in accepted
        )
        group.outcomes[index] = BatchOutcome(
            "stored", readings=len(accepted), quarantined=len(withheld)
        )
    else:
        group.outcomes[index] = BatchOutcome("stored", quarantined=len(withheld))
        if accepted:
            group.events.append((index, gateway, accepted))


async def copy_readings(
    conn: AsyncConnection[Any], rows: list[tuple[str, str, datetime, float, str, int]]
) -> None:
    """Binary COPY of the group's readings, sorted as the (device_id, metric, ts) index is:
    consecutive rows then land on the same index pages, about twice as fast as in
    arrival order (docs/decisions.md). The table is locked by name first, so a COPY
    waiting out a conversion to TimescaleDB lands in the hypertable (ingest.sql); the
    hours of readings over ``LATE_AFTER`` old are noted for the rollup (migration 0017)."""
    if not rows:
        return
    rows.sort()
    with storage_errors("lock_readings_for_copy"):
        await conn.execute(queries()["lock_readings_for_copy"])
    with storage_errors("copy_readings"):
        async with conn.cursor() as cur, cur.copy(queries()["copy_readings"]) as copy:
            copy.set_types(list(_READING_TYPES))
            for row in rows:
                await copy.write_row(row)
    late = datetime.now(UTC) - LATE_AFTER
    hours = {_hour(row[2]) for row in rows if row[2] < late}
    if hours:
        with storage_errors("note_late_hours"):
            await conn.execute(queries()["note_late_hours"], {"ts": sorted(hours)})


def _hour(ts: datetime) -> datetime:
    """The UTC hour holding ``ts``, as ``date_bin('1 hour', ts, '2000-01-01')`` gives it."""
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


async def _store_events(
    conn: AsyncConnection[Any], rules: RuleSet, queue: QueueSettings | None, group: _Group
) -> None:
    """Insert the group's events, run the rules on each, then open or join the incidents
    they call for, and those an opened incident brings (a fire, its residents'
    evacuation help).

    Incidents are taken in one order for every worker (by scope, subject and type), so
    two workers whose groups name the same devices wait for each other instead of
    deadlocking on the incidents' unique indexes.
    """
    contexts = await _contexts(conn, group.events)
    drafts: list[tuple[int, IncidentDraft, int, datetime]] = []
    for index, gateway, events in group.events:
        event_ids = await _insert_events(conn, gateway, events)
        for event, event_id in zip(events, event_ids, strict=True):
            for draft in await evaluate(conn, rules, event, contexts[event.device]):
                drafts.append((index, draft, event_id, event.ts))
        withheld = group.outcomes[index]
        quarantined = withheld.quarantined if withheld is not None else 0
        group.outcomes[index] = BatchOutcome("stored", events=len(events), quarantined=quarantined)
    opened: Counter[int] = Counter()
    joined: Counter[int] = Counter()
    while drafts:
        follow_ups: list[tuple[int, IncidentDraft, int, datetime]] = []
        for index, draft, event_id, ts in sorted(drafts, key=lambda d: _subject(d[1])):
            incident = await open_or_join(conn, draft, event_id=event_id, event_ts=ts, queue=queue)
            if incident.opened:
                opened[index] += 1
                follow_ups.extend(
                    (index, extra, event_id, ts)
                    for extra in await after_opening(conn, rules, draft)
                )
            else:
                joined[index] += 1
        drafts = follow_ups
    for index in opened.keys() | joined.keys():
        stored = group.outcomes[index]
        assert stored is not None
        group.outcomes[index] = replace(
            stored, incidents_opened=opened[index], incidents_joined=joined[index]
        )


def _subject(draft: IncidentDraft) -> tuple[str, str, str]:
    if draft.scope == "resident":
        return ("resident", f"{draft.resident_id:020d}", draft.type)
    if draft.scope == "building":
        return ("building", f"{draft.community_id:020d}/{draft.building}", draft.type)
    return ("device", draft.device_id or "", draft.type)


async def _insert_events(
    conn: AsyncConnection[Any], gateway: str, events: Sequence[Event]
) -> list[int]:
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
    return event_ids


async def _touch(conn: AsyncConnection[Any], group: _Group) -> None:
    if group.latest:
        devices = sorted(group.latest)
        seen = {device: group.latest[device] for device in devices}
        with storage_errors("touch_devices"):
            await conn.execute(
                queries()["touch_devices"],
                {
                    "seen": msgspec.json.encode(seen).decode(),
                    # Device ids match the wire's Identifier pattern: no quoting needed.
                    "ids": "{" + ",".join(devices) + "}",
                    "step_s": LAST_SEEN_STEP_S,
                },
            )
    if group.gateways:
        with storage_errors("touch_gateways"):
            await conn.execute(
                queries()["touch_gateways"],
                {"gateways": sorted(group.gateways), "step_s": LAST_SEEN_STEP_S},
            )


async def _insert_quarantine(conn: AsyncConnection[Any], rows: Sequence[_Quarantine]) -> None:
    if not rows:
        return
    params = [
        {
            "topic": row.topic,
            "gateway": row.gateway,
            "reason": row.reason,
            "payload": row.payload[:QUARANTINE_PAYLOAD_LIMIT],
            "payload_size": len(row.payload),
        }
        for row in rows
    ]
    with storage_errors("insert_quarantine"):
        async with conn.cursor() as cur:
            await cur.executemany(queries()["insert_quarantine"], params)
