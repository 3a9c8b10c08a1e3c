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
- a message that can never be stored as sent (bad topic, payload over the size limit,
  malformed payload or one of another schema version, header that contradicts the
  topic, unknown gateway, values the database refuses) is quarantined with the reason
  and the raw payload (at most 64 KiB kept);
- a batch whose key was stored before is a duplicate when its payload's sha256 matches
  the stored one, and a conflict otherwise (a gateway restored from an old disk image
  reuses batch numbers for new readings): quarantined with both digests, never dropped
  in silence;
- an item dated outside the plausible window around the group's time of receipt
  (``IngestSettings.clock_past_s``/``clock_future_s``) is kept at the time of receipt,
  flagged ``clock_skew``, so no incident and no chart is dated by a wrong clock; its
  gateway gets one ``gateway_clock_skew`` incident (joined while it is active) and one
  warning per process;

so the caller may acknowledge every message of the group, and tell each gateway what
became of each of its batches (every outcome carries the batch key when the payload
names one, and the reason when the batch was refused). When it raises
``StorageError`` nothing was committed and no message may be acknowledged: the broker
redelivers them.

Values the database refuses (SQLSTATE classes 22 and 23) abort the whole group's
transaction without saying which message held them, so the group is then written one
message at a time, and only the message at fault is quarantined.
"""

from __future__ import annotations

import hashlib
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
from cloud.incidents import IncidentDraft, Priority, open_or_join
from cloud.ingest.counters import BatchOutcome
from cloud.rules.config import RuleSet
from cloud.rules.context import DeviceContext
from cloud.rules.engine import after_opening, evaluate
from cloud.settings import IngestSettings, QueueSettings
from cloud.storage.database import rejects_input, storage_errors
from cloud.storage.sql import queries
from schemas.errors import SchemaVersionMismatch, WireError
from schemas.topics import Channel, TopicAddress, parse_topic
from schemas.wire import (
    Event,
    EventBatch,
    Reading,
    TelemetryBatch,
    decode,
    encode,
    read_batch_header,
)

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

MAX_PAYLOAD_BYTES: Final[int] = IngestSettings.model_fields["max_payload_bytes"].default
"""``decode_message``'s limit when it is given none: the setting's default."""
CLOCK_SKEW_INCIDENT: Final = "gateway_clock_skew"
"""The incident about a gateway whose items arrive dated outside the plausible window;
its subject is the gateway (``device_id``), as for ``gateway_offline``."""

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
    digest: bytes = b""
    """sha256 of the payload, for a decoded batch: a resend must match what was stored."""
    key: tuple[str, int] | None = None
    """(spool epoch, batch seq) when the payload names them, even when it was rejected:
    what the gateway's acknowledgement names the batch by."""

    @property
    def items(self) -> int:
        """Readings or events in the batch (0 for a rejected message)."""
        return len(self.batch.items) if self.batch is not None else 0

    @property
    def gateway(self) -> str | None:
        """The gateway the topic names, once the topic parsed."""
        return self.address.gateway if self.address is not None else None


def decode_message(
    topic: str, payload: bytes, *, max_payload_bytes: int = MAX_PAYLOAD_BYTES
) -> Decoded:
    """Parse the topic and the payload of an ingest message and check they agree.

    Pure: touches no database. Never raises: a topic outside the contract, a channel
    ingest does not store, a payload over ``max_payload_bytes`` (not decoded at all),
    a malformed payload or one of another schema version, or a header whose gateway or
    community differ from the topic's yields a ``Decoded`` with the ``rejection``
    reason, and with the batch key when the payload's header can still be read.
    """
    try:
        address = parse_topic(topic)
    except WireError as exc:
        return _rejected(topic, payload, None, f"bad topic: {exc.reason}")
    if len(payload) > max_payload_bytes:
        reason = f"payload of {len(payload)} bytes is over the {max_payload_bytes} byte limit"
        return _rejected(topic, payload, address, reason)
    batch: Batch
    try:
        if address.channel is Channel.TELEMETRY:
            batch = decode(payload, TelemetryBatch, topic=topic)
        elif address.channel is Channel.EVENTS:
            batch = decode(payload, EventBatch, topic=topic)
        else:
            reason = f"channel {address.channel} is not ingested"
            return _rejected(topic, payload, address, reason)
    except SchemaVersionMismatch as exc:
        reason = f"{address.channel} payload of another schema version: {exc.reason}"
        return _rejected(topic, payload, address, reason)
    except WireError as exc:
        reason = f"malformed {address.channel} payload: {exc.reason}"
        return _rejected(topic, payload, address, reason)
    key = (batch.spool_epoch, batch.batch_seq)
    for name, in_payload, in_topic in (
        ("gateway", batch.gateway, address.gateway),
        ("community", batch.community, address.community),
    ):
        if in_payload != in_topic:
            reason = (
                f"payload {name} {in_payload!r} does not match the topic's {in_topic!r} "
                f"(batch {batch.spool_epoch}/{batch.batch_seq})"
            )
            return Decoded(topic, payload, address, rejection=reason, key=key)
    return Decoded(topic, payload, address, batch, digest=hashlib.sha256(payload).digest(), key=key)


def _rejected(topic: str, payload: bytes, address: TopicAddress | None, reason: str) -> Decoded:
    """A message refused before it became a batch; keyed by its header when readable, so
    its gateway can still be told the batch is refused rather than resend it forever."""
    header = read_batch_header(payload)
    key = (header.spool_epoch, header.batch_seq) if header is not None else None
    return Decoded(topic, payload, address, rejection=reason, key=key)


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
    """What one transaction writes, gathered before the first statement that writes.

    ``received_at`` is the group's time of receipt; items dated outside
    [``not_before``, ``not_after``] are stored at it instead (``doubt``).
    """

    outcomes: list[BatchOutcome | None]
    received_at: datetime
    not_before: datetime
    not_after: datetime
    quarantine: list[_Quarantine] = field(default_factory=list)
    readings: list[tuple[str, str, datetime, float, str, int]] = field(default_factory=list)
    skewed_readings: list[tuple[str, str, datetime, float, str, int]] = field(default_factory=list)
    events: list[tuple[int, str, list[Event]]] = field(default_factory=list)
    claimed: dict[int, datetime] = field(default_factory=dict)
    """The device's own time of each event moved to the time of receipt, by ``id()`` of
    the moved event (alive in ``events`` as long as this)."""
    skewed: dict[str, tuple[int, datetime]] = field(default_factory=dict)
    """Gateways whose items were moved: the first message holding one, and its time."""
    communities: dict[str, int] = field(default_factory=dict)
    """Community id of each registered gateway of the group."""
    latest: dict[str, datetime] = field(default_factory=dict)
    gateways: set[str] = field(default_factory=set)

    def reject(self, index: int, message: Decoded, reason: str) -> None:
        kind = f"{message.gateway or message.topic}: {reason.split(' (', 1)[0][:80]}"
        self.quarantine.append(
            _Quarantine(message.topic, message.gateway, reason, message.payload, kind)
        )
        self.outcomes[index] = BatchOutcome(
            "quarantined", quarantined=1, reason=reason, key=message.key
        )

    def seen(self, items: Iterable[Reading | Event]) -> None:
        latest = self.latest
        for item in items:
            known = latest.get(item.device)
            if known is None or item.ts > known:
                latest[item.device] = item.ts

    def believable(self, items: Sequence[Reading | Event]) -> bool:
        """Whether every item's time is in the plausible window (one pass each for the
        earliest and the latest: the common case costs no per-item branching)."""
        stamps = [item.ts for item in items]
        return not stamps or (min(stamps) >= self.not_before and max(stamps) <= self.not_after)

    def plausible(self, ts: datetime) -> bool:
        return self.not_before <= ts <= self.not_after

    def doubt(self, index: int, gateway: str, items: Sequence[Reading | Event]) -> None:
        """Note items of message ``index`` (as sent) that are stored at the time of
        receipt: their devices were seen then, and their gateway's clock is wrong."""
        received_at = self.received_at
        latest = self.latest
        for item in items:
            known = latest.get(item.device)
            if known is None or received_at > known:
                latest[item.device] = received_at
        self.skewed.setdefault(gateway, (index, items[0].ts))


class BatchWriter:
    """Stores groups of ingest messages through a connection pool; see the module docstring.

    The pool's connections must be in autocommit mode (transactions are explicit).
    ``queue`` times the escalation of incidents the rules open (its defaults when None);
    ``ingest`` gives the plausible window of items' times (its defaults when None);
    ``connect_timeout_s`` bounds the wait for a pooled connection.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool[Any],
        rules: RuleSet,
        *,
        queue: QueueSettings | None = None,
        ingest: IngestSettings | None = None,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self._pool = pool
        self._rules = rules
        self._queue = queue
        settings = ingest or IngestSettings()
        self._clock_past = timedelta(seconds=settings.clock_past_s)
        self._clock_future = timedelta(seconds=settings.clock_future_s)
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
        return [BatchOutcome("quarantined", quarantined=1, reason=reason, key=message.key)]

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[AsyncConnection[Any]]:
        # Also wraps the transaction's own COMMIT or ROLLBACK, which fail with psycopg
        # errors of their own when the connection drops mid-group.
        with storage_errors("connect"):
            async with self._pool.connection(timeout=self._connect_timeout_s) as conn:
                yield conn

    async def _store(self, messages: Sequence[Decoded]) -> list[BatchOutcome]:
        now = datetime.now(UTC)
        group = _Group(
            outcomes=[None] * len(messages),
            received_at=now,
            not_before=now - self._clock_past,
            not_after=now + self._clock_future,
        )
        async with (
            self._connection() as conn,
            _pipelined(conn, messages),
            conn.transaction(),
        ):
            found = await _look_up(conn, messages)
            candidates = _check_gateways(messages, found.gateways, group)
            fresh = await _record_batches(conn, messages, candidates, group)
            for index in fresh:
                _split(index, messages[index], found.misplaced, group)
            await _insert_quarantine(conn, group.quarantine)
            await copy_readings(conn, group.readings)
            await copy_readings(conn, group.skewed_readings, clock_skew=True)
            if group.events:
                await _store_events(conn, self._rules, self._queue, group, found)
            if group.skewed:
                await _report_clocks(conn, self._queue, group)
            # Last, so the rows this writes (shared with other workers' groups) stay
            # locked only for the commit.
            await _touch(conn, group)
        for row in group.quarantine:
            if self._first(row.kind):
                log.warning(
                    "quarantined on %s: %s (repeats are counted, not logged)", row.topic, row.reason
                )
        for gateway, (_, claimed) in group.skewed.items():
            if self._first(f"{gateway}: clock skew"):
                log.warning(
                    "gateway %s sends items dated outside the plausible window (%s before to "
                    "%s after receipt), such as %s: stored at their time of receipt, flagged "
                    "clock_skew, incident %s (logged once per gateway)",
                    gateway,
                    self._clock_past,
                    self._clock_future,
                    claimed.isoformat(),
                    CLOCK_SKEW_INCIDENT,
                )
        outcomes = [outcome for outcome in group.outcomes if outcome is not None]
        assert len(outcomes) == len(messages), "every message of the group has its outcome"
        return outcomes

    def _first(self, kind: str) -> bool:
        """Whether ``kind`` of problem is met for the first time (of the last
        ``_LOGGED_KINDS_KEPT``): its first occurrence is logged, repeats (an unknown
        device reporting every second) only counted."""
        if kind in self._logged:
            return False
        self._logged[kind] = None
        while len(self._logged) > _LOGGED_KINDS_KEPT:
            self._logged.popitem(last=False)
        return True


@asynccontextmanager
async def _pipelined(
    conn: AsyncConnection[Any], messages: Sequence[Decoded]
) -> AsyncIterator[None]:
    """Pipeline mode for a group without telemetry (``COPY`` cannot run in it).

    Statements then travel together up to the first whose result is read, instead of a
    round trip each: an alarm's transaction is a dozen statements in four round trips
    (the group's lookups, its batch keys, its events with their incident, the rest with
    COMMIT), and on a busy machine each round trip waits for a core (decisions.md).
    """
    if any(isinstance(message.batch, TelemetryBatch) for message in messages):
        yield
        return
    async with conn.pipeline():
        yield


def _batch(message: Decoded) -> Batch:
    assert message.batch is not None, "only decoded messages reach this point"
    return message.batch


@dataclass(frozen=True, slots=True)
class _Found:
    """What ``_look_up`` read for a group."""

    gateways: dict[str, tuple[str, str, int]]
    """Each named gateway's community path, status and community id."""
    misplaced: _Misplaced
    contexts: dict[str, DeviceContext]
    """What the rules know of each device named in an event batch."""
    event_ids: list[int]
    """Ids drawn for the group's events, ascending: one per event of its decoded event
    batches, so every event stored has one (resent and withheld ones leave theirs
    unused)."""


async def _look_up(conn: AsyncConnection[Any], messages: Sequence[Decoded]) -> _Found:
    """Read what the group's messages name, before anything is written: their gateways'
    registrations, the (device, gateway) pairs that may not be stored, the devices whose
    events the rules will judge, and ids for those events.

    The four reads depend on nothing but the payloads, so they are sent before any
    result is read: in pipeline mode one round trip instead of four. They cover every
    decoded message, resends and items later withheld included; a few ids go unused.
    Drawing the events' ids here lets an event and the incident it opens be sent
    together, without waiting for the insert to return the id.
    """
    decoded = [
        (m.address.gateway, m.batch)
        for m in messages
        if m.batch is not None and m.address is not None
    ]
    names = sorted({gateway for gateway, _ in decoded})
    pairs = sorted({(item.device, gateway) for gateway, batch in decoded for item in batch.items})
    events = [e for _, batch in decoded if isinstance(batch, EventBatch) for e in batch.items]
    devices = sorted({e.device for e in events})
    sql = queries()
    sent: dict[str, Any] = {}
    for name, wanted, params in (
        ("gateways_for_ingest", names, {"gateways": names}),
        ("devices_out_of_place", pairs, {"pairs": msgspec.json.encode(pairs).decode()}),
        ("devices_for_rules", devices, {"devices": devices}),
        ("draw_event_ids", events, {"count": len(events)}),
    ):
        if wanted:
            with storage_errors(name):
                sent[name] = await conn.execute(sql[name], params)
    rows: dict[str, list[Any]] = {}
    for name, cur in sent.items():
        with storage_errors(name):
            rows[name] = await cur.fetchall()
    return _Found(
        gateways={r[0]: (r[1], r[2], int(r[3])) for r in rows.get("gateways_for_ingest", ())},
        misplaced={(r[0], r[1]): (r[2], r[3]) for r in rows.get("devices_out_of_place", ())},
        contexts={r[0]: DeviceContext(*r) for r in rows.get("devices_for_rules", ())},
        event_ids=sorted(int(r[0]) for r in rows.get("draw_event_ids", ())),
    )


def _check_gateways(
    messages: Sequence[Decoded], known: dict[str, tuple[str, str, int]], group: _Group
) -> list[int]:
    """Indexes of the messages whose gateway is registered (``known``), active and in the
    topic's community; the others are rejected with the reason."""
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
            group.communities[message.address.gateway] = registration[2]
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
    """Record the candidates' batch keys and digests; return the indexes of batches not
    seen before, and settle the others as duplicates or conflicts (``_resent``).

    A key twice in one group (a redelivery racing its original) counts once: the first.
    Keys are inserted in sorted order so two workers' groups never wait on each other
    in a cycle. The stored digests are read only when some key was there already.
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
                "digests": [messages[first[k]].digest for k in keys],
            },
        )
        inserted = {(row[0], row[1], row[2], int(row[3])) for row in await cur.fetchall()}
    stored: dict[BatchKey, bytes | None] = {key: messages[first[key]].digest for key in inserted}
    resent = [key for key in keys if key not in inserted]
    if resent:
        with storage_errors("batch_digests"):
            cur = await conn.execute(
                queries()["batch_digests"],
                {
                    "gateways": [k[0] for k in resent],
                    "epochs": [k[1] for k in resent],
                    "channels": [k[2] for k in resent],
                    "seqs": [k[3] for k in resent],
                },
            )
            for row in await cur.fetchall():
                stored[(row[0], row[1], row[2], int(row[3]))] = (
                    None if row[4] is None else bytes(row[4])
                )
    fresh: list[int] = []
    for index in candidates:
        key = _key(messages[index])
        if key in inserted and first[key] == index:
            fresh.append(index)
        else:
            _resent(index, messages[index], key, stored.get(key), group)
    return fresh


def _resent(
    index: int, message: Decoded, key: BatchKey, stored: bytes | None, group: _Group
) -> None:
    """Settle a batch whose key is stored (``stored``: that batch's digest, None when
    unknown): the same content is a duplicate, stored nothing; other content is a
    conflict, quarantined with both digests and refused, logged once per spool epoch."""
    if stored is None or stored == message.digest:
        group.outcomes[index] = BatchOutcome("duplicate", key=message.key)
        return
    gateway, epoch, channel, seq = key
    reason = (
        f"batch key conflict: {channel} batch {epoch}/{seq} was stored before with sha256 "
        f"{stored.hex()}, this one has sha256 {message.digest.hex()}: other content under a "
        "stored key (a gateway restored from an old disk image reuses batch numbers)"
    )
    kind = f"{gateway}: batch key conflicts in spool epoch {epoch}"
    group.quarantine.append(_Quarantine(message.topic, gateway, reason, message.payload, kind))
    group.outcomes[index] = BatchOutcome("conflict", quarantined=1, reason=reason, key=message.key)


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
    if accepted:
        group.gateways.add(gateway)
    believed = accepted
    doubted: list[Any] = []
    if not group.believable(accepted):
        believed = [item for item in accepted if group.plausible(item.ts)]
        doubted = [item for item in accepted if not group.plausible(item.ts)]
        group.doubt(index, gateway, doubted)
    group.seen(believed)
    if isinstance(batch, TelemetryBatch):
        group.readings.extend(
            (r.device, r.metric.value, r.ts, r.value, gateway, r.seq) for r in believed
        )
        received_at = group.received_at
        group.skewed_readings.extend(
            (r.device, r.metric.value, received_at, r.value, gateway, r.seq) for r in doubted
        )
        readings = len(accepted)
    else:
        if doubted:
            # Events keep their order; those moved to the time of receipt remember the
            # device's own time for their row.
            moved = {id(event) for event in doubted}
            accepted = [
                _at_receipt(event, group) if id(event) in moved else event for event in accepted
            ]
        if accepted:
            group.events.append((index, gateway, accepted))
        readings = 0
    group.outcomes[index] = BatchOutcome(
        "stored",
        readings=readings,
        quarantined=len(withheld),
        clock_skewed=len(doubted),
        key=message.key,
    )


def _at_receipt(event: Event, group: _Group) -> Event:
    moved = msgspec.structs.replace(event, ts=group.received_at)
    group.claimed[id(moved)] = event.ts
    return moved


async def copy_readings(
    conn: AsyncConnection[Any],
    rows: list[tuple[str, str, datetime, float, str, int]],
    *,
    clock_skew: bool = False,
) -> None:
    """Binary COPY of the group's readings, sorted as the (device_id, metric, ts) index is:
    consecutive rows then land on the same index pages, about twice as fast as in
    arrival order (docs/decisions.md). The table is locked by name first, so a COPY
    waiting out a conversion to TimescaleDB lands in the hypertable (ingest.sql); the
    hours of readings over ``LATE_AFTER`` old are noted for the rollup (migration 0017).
    With ``clock_skew`` the rows (dated by their time of receipt) are flagged so, by a
    COPY of their own: the ordinary one does not carry the column."""
    if not rows:
        return
    rows.sort()
    with storage_errors("lock_readings_for_copy"):
        await conn.execute(queries()["lock_readings_for_copy"])
    query = "copy_skewed_readings" if clock_skew else "copy_readings"
    with storage_errors(query):
        async with conn.cursor() as cur, cur.copy(queries()[query]) as copy:
            if clock_skew:
                copy.set_types([*_READING_TYPES, "bool"])
                for row in rows:
                    await copy.write_row((*row, True))
            else:
                copy.set_types(list(_READING_TYPES))
                for row in rows:
                    await copy.write_row(row)
    late = datetime.now(UTC) - LATE_AFTER
    # The readings of one poll share their time: hour each distinct time once.
    hours = {_hour(ts) for ts in {row[2] for row in rows} if ts < late}
    if hours:
        with storage_errors("note_late_hours"):
            await conn.execute(queries()["note_late_hours"], {"ts": sorted(hours)})


def _hour(ts: datetime) -> datetime:
    """The UTC hour holding ``ts``, as ``date_bin('1 hour', ts, '2000-01-01')`` gives it."""
    return ts.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


async def _store_events(
    conn: AsyncConnection[Any],
    rules: RuleSet,
    queue: QueueSettings | None,
    group: _Group,
    found: _Found,
) -> None:
    """Insert the group's events, run the rules on each, then open or join the incidents
    they call for, and those an opened incident brings (a fire, its residents'
    evacuation help).

    Incidents are taken in one order for every worker (by scope, subject and type), so
    two workers whose groups name the same devices wait for each other instead of
    deadlocking on the incidents' unique indexes.
    """
    drafts: list[tuple[int, IncidentDraft, int, datetime]] = []
    ids = iter(found.event_ids)
    for index, gateway, events in group.events:
        event_ids = [next(ids) for _ in events]
        await _insert_events(conn, gateway, events, group.claimed, event_ids)
        for event, event_id in zip(events, event_ids, strict=True):
            for draft in await evaluate(conn, rules, event, found.contexts[event.device]):
                drafts.append((index, draft, event_id, event.ts))
        split = group.outcomes[index]
        assert split is not None
        group.outcomes[index] = replace(split, events=len(events))
    opened: Counter[int] = Counter()
    joined: Counter[int] = Counter()
    while drafts:
        follow_ups: list[tuple[int, IncidentDraft, int, datetime]] = []
        for index, draft, event_id, ts in sorted(drafts, key=lambda d: d[1].lock_order):
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


async def _report_clocks(
    conn: AsyncConnection[Any], queue: QueueSettings | None, group: _Group
) -> None:
    """Open, or join while it is active, one ``CLOCK_SKEW_INCIDENT`` per gateway whose
    items the group moved to the time of receipt, dated by that time; counted on the
    first message of the gateway that held such an item."""
    for gateway in sorted(group.skewed):
        index, claimed = group.skewed[gateway]
        draft = IncidentDraft(
            type=CLOCK_SKEW_INCIDENT,
            priority=Priority.ROUTINE,
            community_id=group.communities[gateway],
            building=None,
            unit=None,
            device_id=gateway,
            cause=f"items dated {claimed.isoformat()} received at {group.received_at.isoformat()}",
        )
        incident = await open_or_join(
            conn, draft, event_id=None, event_ts=group.received_at, queue=queue
        )
        outcome = group.outcomes[index]
        assert outcome is not None
        group.outcomes[index] = replace(
            outcome,
            incidents_opened=outcome.incidents_opened + incident.opened,
            incidents_joined=outcome.incidents_joined + (not incident.opened),
        )


async def _insert_events(
    conn: AsyncConnection[Any],
    gateway: str,
    events: Sequence[Event],
    claimed: dict[int, datetime],
    ids: Sequence[int],
) -> None:
    """Insert ``events`` under ``ids`` (drawn by ``_look_up``), reading nothing back, so in
    pipeline mode the inserts travel with what follows them. An event found in
    ``claimed`` is dated by its time of receipt and keeps the device's own time as
    ``device_ts``."""
    params = [
        {
            "id": event_id,
            "clock_skew": id(event) in claimed,
            "device_ts": claimed.get(id(event)),
            "ts": event.ts,
            "device": event.device,
            "gateway": gateway,
            "seq": event.seq,
            "type": event.type.value,
            "severity": event.severity.value,
            "data": msgspec.json.encode(event.data).decode(),
        }
        for event, event_id in zip(events, ids, strict=True)
    ]
    with storage_errors("insert_event"):
        async with conn.cursor() as cur:
            await cur.executemany(queries()["insert_event"], params)


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
