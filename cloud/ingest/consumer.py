"""The ingest side of MQTT: the only module of ``cloud.ingest`` that imports aiomqtt
(``cloud.broker.dynsec`` and ``cloud.configs.link`` are the others in ``cloud``).

An ``IngestConsumer`` is one lane of an ingest worker: events (the alarm lane) or
telemetry. It keeps its own broker connection with a stable client id and a persistent
session (MQTT v5: clean start off, a session expiry interval and a Receive Maximum;
v3.1.1: clean session off), subscribes at QoS 1 to its channel of every gateway
(through the shared subscription group on v5, so workers here and on other machines
split the load), and writes what arrives in groups: one transaction per group, bounded
by readings, messages and waiting time, on its own pooled connection.

An alarm so never waits behind telemetry, neither in the cloud nor in the broker: a
broker delivers a session's messages in order and holds back what passes its Receive
Maximum, so an ingest that falls behind on telemetry would otherwise leave an alarm
queued in the broker behind thousands of telemetry messages. An events group is due
at once; a telemetry group when full or once its first message has waited
``group_max_wait_s``. A due group keeps growing (up to the size bounds) until the
writer is free, so groups grow with the load and the database gets fewer, larger
transactions when it is busiest. Decoding and gathering run in a task of their own,
so Python's share of the work overlaps the database's.

After a group commits, its batches are acknowledged to their gateways (``acks``: one
``BatchAck`` per gateway, handed to the connection without waiting for the broker),
and only then are its messages acknowledged to the broker (PUBACK), in the order they
arrived, as MQTT asks. When the database fails, nothing uncommitted is acknowledged
and the consumer drops the connection: the broker keeps the messages in the session
and redelivers them after the reconnect, which waits with capped, jittered backoff. A
committed message that lost its PUBACK so comes back as a duplicate, and is
acknowledged to its gateway again.

A message that makes ingest itself fail (a fault in our code that this payload alone
triggers) is retried alone ``poison_attempts`` times and then quarantined with the
error, so one bad message cannot block a worker forever. A database that is down or
misconfigured is never such a reason: those messages wait.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import aiomqtt
from paho.mqtt.client import MQTT_CLEAN_START_FIRST_ONLY, MQTT_ERR_SUCCESS, error_string
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud.backoff import Backoff
from cloud.errors import StorageError, StorageUnavailable
from cloud.ingest.acks import batch_acks
from cloud.ingest.counters import BatchOutcome, IngestCounters
from cloud.ingest.publishes import MalformedPublish, Publish, parse_publish
from cloud.ingest.writer import BatchWriter, Decoded, decode_message
from cloud.settings import IngestSettings
from schemas.broker import BrokerAddress
from schemas.topics import Channel, subscription

log = logging.getLogger(__name__)

INGESTED_CHANNELS: Final = (Channel.EVENTS, Channel.TELEMETRY)
"""Events first: alarms travel on their own topic, ahead of telemetry."""
ALARM_CLIENT_SUFFIX: Final = "-alarms"
"""Appended to a worker's client id for its events lane's session."""

_BROKER_TIMEOUT_S: Final = 10.0
_STRIKES_KEPT: Final = 1000


class PahoDirect:
    """What ingest needs of paho-mqtt that aiomqtt 2.5 does not offer.

    aiomqtt acknowledges every message as it hands it over and has no public way to
    defer that (aiomqtt issue #345), which would let a crash between receipt and commit
    lose a message; and its ``publish`` waits for the broker's PUBACK, which would put a
    network round trip between a group's commit and the next. paho-mqtt, underneath,
    supports both manual acknowledgement and publishing without waiting.

    It also takes each PUBLISH from paho as it is read (``inbox``), parsed by
    ``publishes.parse_publish`` instead of paho's decoder, and calls ``wake``: paho
    builds a ``Properties`` object per message on MQTT v5 and aiomqtt a ``Message``, a
    queue entry and two tasks, together over half of ingest's CPU at small batches
    (docs/decisions.md, "Ingest's own PUBLISH reader, a frozen heap").

    This class reaches paho through aiomqtt's private ``_client`` and replaces paho's
    private ``_handle_publish`` for this connection; it is the only place that does, so
    when either library changes only this class does. Create it before the client
    connects: paho reads the manual-ack flag as messages arrive.
    """

    def __init__(self, client: aiomqtt.Client, *, v5: bool, wake: Callable[[], None]) -> None:
        self._client = client
        self._paho = client._client
        self._paho.manual_ack_set(True)
        self._paho._handle_publish = self._take  # type: ignore[method-assign]
        self._v5 = v5
        self._wake = wake
        self._loop = asyncio.get_running_loop()
        self.inbox: deque[Publish] = deque()
        """Messages received and not yet taken, oldest first."""

    def _take(self) -> MQTTErrorCode:
        """paho's handler of the PUBLISH it has just read: keep it and wake the reader.
        A malformed one ends the connection, as paho's own decoder would."""
        packet = self._paho._in_packet
        try:
            publish = parse_publish(
                packet["command"], packet["packet"], v5=self._v5, received=self._loop.time()
            )
        except MalformedPublish as exc:
            log.error("ingest: broker sent %s; dropping the connection", exc)
            return MQTTErrorCode.MQTT_ERR_PROTOCOL
        self.inbox.append(publish)
        self._wake()
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def connected(self) -> None:
        """Call once connected: from then on a lost connection wakes the reader too."""
        self._client._disconnected.add_done_callback(lambda _: self._wake())

    def lost(self) -> aiomqtt.MqttError | None:
        """Why the connection ended; None while it lasts."""
        disconnected = self._client._disconnected
        if not disconnected.done():
            return None
        cause = None if disconnected.cancelled() else disconnected.exception()
        return aiomqtt.MqttError(f"disconnected: {cause or 'by the broker'}")

    def ack(self, message: Publish) -> None:
        """Send the PUBACK for ``message``; raises MqttError if it cannot be sent."""
        if message.qos == 0:
            return
        result = self._paho.ack(message.mid, message.qos)
        if result != MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttError(f"could not acknowledge message {message.mid}: {result}")

    def publish(self, topic: str, payload: bytes) -> str | None:
        """Hand ``payload`` to the connection at QoS 1 without waiting for the broker;
        None when handed over, else why not. paho sends it in order with the packets
        queued after it (the PUBACKs), and keeps at most its in-flight limit of them
        unacknowledged by the broker, queueing the rest."""
        info = self._paho.publish(topic, payload, qos=1)
        return None if info.rc == MQTT_ERR_SUCCESS else error_string(info.rc)


class _Wakeup:
    """Wakes the one task that waits on it; the task then looks at what changed.

    One future per wait, whatever ends it (a message, the writer free, the connection
    lost, a group's due time), where ``asyncio.wait`` would add a future and callbacks
    per thing per wait: the gathering task waits about once per message.
    """

    __slots__ = ("_waiter",)

    def __init__(self) -> None:
        self._waiter: asyncio.Future[None] | None = None

    def set(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self, until: float | None) -> None:
        """Until ``set`` or the loop time ``until`` (None: no limit)."""
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timer = loop.call_at(until, self.set) if until is not None else None
        try:
            await waiter
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()


def lane_client_ids(client_id: str) -> dict[Channel, str]:
    """The client id of each lane of the worker ``client_id``: telemetry keeps the
    worker's own (the session that carried both channels before the lanes split),
    events gets ``ALARM_CLIENT_SUFFIX``."""
    return {Channel.EVENTS: client_id + ALARM_CLIENT_SUFFIX, Channel.TELEMETRY: client_id}


class IngestConsumer:
    """One lane of an ingest worker: one broker session for ``channel``, its groups
    written one at a time on one of ``writer``'s pooled connections.

    ``client_id`` must be stable across restarts and distinct per lane and worker
    (``lane_client_ids``): the broker keeps the session (and the unacknowledged
    messages) under it.
    """

    def __init__(
        self,
        broker: BrokerAddress,
        settings: IngestSettings,
        writer: BatchWriter,
        counters: IngestCounters,
        *,
        channel: Channel,
        client_id: str,
        shared_group: str | None = None,
        ca_file: Path | None = None,
    ) -> None:
        """``ca_file``: the CA of an ``mqtts://`` broker; None trusts the system's."""
        if channel not in INGESTED_CHANNELS:
            raise ValueError(f"ingest does not store {channel} messages")
        self.channel = channel
        self._broker = broker
        self._ca_file = ca_file
        self._shared_group = shared_group
        self._settings = settings
        self._writer = writer
        self._counters = counters
        self.client_id = client_id
        self._backoff = Backoff(initial=settings.backoff_initial_s, cap=settings.backoff_cap_s)
        self._strikes: OrderedDict[tuple[str, bytes], int] = OrderedDict()
        self.subscribed = asyncio.Event()
        """Set once the first session's subscriptions are granted (never cleared)."""

    async def run(self) -> None:
        """Consume until cancelled, reconnecting after broker or database failures.

        Never returns; cancellation is the way to stop it, and is safe at any point:
        a message whose commit was cut short is unacknowledged and comes back.
        """
        while True:
            try:
                await self._session()
            except aiomqtt.MqttError as exc:
                self._counters.broker_errors += 1
                log.warning("ingest %s: broker connection lost: %s", self.client_id, exc)
            except StorageError as exc:
                self._counters.storage_errors += 1
                log.warning(
                    "ingest %s: database failed, messages left for redelivery: %s",
                    self.client_id,
                    exc,
                )
            except Exception:
                self._counters.failures += 1
                log.exception("ingest %s: unexpected failure; reconnecting", self.client_id)
            delay = self._backoff.next_delay()
            log.info("ingest %s: reconnecting in %.1f s", self.client_id, delay)
            await asyncio.sleep(delay)

    def _client(self) -> aiomqtt.Client:
        v5 = self._broker.version == "5"
        properties: Properties | None = None
        if v5:
            # paho's Properties has no annotations on its constructor.
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = (
                self._settings.shared_session_expiry_s
                if self._shared_group
                else self._settings.session_expiry_s
            )
            properties.ReceiveMaximum = self._settings.receive_maximum
        return aiomqtt.Client(
            self._broker.host,
            self._broker.port,
            username=self._broker.username,
            password=self._broker.password,
            identifier=self.client_id,
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            clean_session=None if v5 else False,
            # paho refuses any clean-start setting but its default on MQTT 3.1.1,
            # where clean_session=False above keeps the session instead.
            clean_start=False if v5 else MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
            tls_context=(
                ssl.create_default_context(cafile=self._ca_file) if self._broker.tls else None
            ),
            timeout=_BROKER_TIMEOUT_S,
            # Unbounded: aiomqtt drops what arrives past its bound, and a dropped message
            # is never acknowledged (see IngestSettings.receive_maximum).
            max_queued_incoming_messages=0,
        )

    async def _session(self) -> None:
        wakeup = _Wakeup()
        client = self._client()
        paho = PahoDirect(client, v5=self._broker.version == "5", wake=wakeup.set)
        async with client:
            paho.connected()
            await client.unsubscribe(self._stale_filters(), timeout=_BROKER_TIMEOUT_S)
            topic = subscription(self.channel, shared_group=self._shared_group)
            await client.subscribe(topic, qos=1, timeout=_BROKER_TIMEOUT_S)
            log.info("ingest %s: subscribed on %s", self.client_id, self._broker.redacted())
            self.subscribed.set()
            lane = _Lane(self._settings, urgent=self.channel is Channel.EVENTS, wake=wakeup.set)
            in_order = _InOrder(paho, self._counters)
            await _first_failure(
                self._gather(paho, lane, in_order, wakeup), self._write(lane, paho, in_order)
            )

    def _stale_filters(self) -> list[str]:
        """Every ingest filter but this lane's own, to drop from the session: a worker
        that changed between plain and shared, or whose session carried both channels
        before the lanes split, would otherwise keep the old filters and see messages
        twice. What the session already queued under them still arrives, and is stored
        here like any other message."""
        ours = subscription(self.channel, shared_group=self._shared_group)
        groups = [None, self._settings.group]
        if not self._broker.supports_shared_subscriptions:
            groups = [None]
        every = (subscription(c, shared_group=g) for g in groups for c in INGESTED_CHANNELS)
        return [topic for topic in every if topic != ours]

    async def _gather(
        self, paho: PahoDirect, lane: _Lane, in_order: _InOrder, wakeup: _Wakeup
    ) -> None:
        """Decode arriving messages into the lane's groups and hand each group over
        when it is due and the writer is free; raise MqttError once the connection is
        lost.

        Never waits for the writer while a message may arrive. With a full group
        waiting behind another, further messages are kept as they came
        (``_Lane.backlog``) and decoded once there is room, so what is decoded ahead
        stays at two groups; the broker bounds the rest, sending no more than
        ``receive_maximum`` messages that are not acknowledged yet.
        """
        loop = asyncio.get_running_loop()
        inbox = paho.inbox
        while True:
            if (lost := paho.lost()) is not None:
                raise lost
            while inbox:
                lane.add(in_order.arrived(inbox.popleft()))
            now = loop.time()
            due = lane.due_at()
            if due is not None and due <= now and lane.handoff.free:
                lane.handoff.put(lane.groups.popleft())
                lane.refill()
                continue
            await wakeup.wait(due if due is not None and due > now else None)

    async def _write(self, lane: _Lane, paho: PahoDirect, in_order: _InOrder) -> None:
        """Write ``lane``'s groups in order; after each commit, acknowledge its batches to
        their gateways, then send their PUBACKs."""
        while True:
            group = await lane.handoff.take()
            outcomes = await self._store(group.decoded)
            committed_at = datetime.now(UTC)
            self._counters.record_group(
                _sealed_at(group.decoded, outcomes), committed_at=committed_at
            )
            self._acknowledge(paho, group.decoded, outcomes, committed_at)
            in_order.settle(group.arrivals, outcomes)
            self._backoff.reset()

    def _acknowledge(
        self,
        paho: PahoDirect,
        group: Sequence[Decoded],
        outcomes: Sequence[BatchOutcome],
        committed_at: datetime,
    ) -> None:
        """Publish the group's ``BatchAck``s. One that cannot be handed over is counted
        and logged, not retried: the connection is failing then, so the PUBACKs after
        it fail too and the broker redelivers the messages; and should one be lost
        anyway, the gateway resends the batch after its acknowledgement timeout and
        ingest acknowledges it as a duplicate."""
        for ack in batch_acks(group, outcomes, acked_at=committed_at):
            problem = paho.publish(ack.topic, ack.payload)
            if problem is None:
                self._counters.acks_published += 1
            else:
                self._counters.ack_failures += 1
                log.warning(
                    "ingest %s: acknowledgement of %d batches on %s not sent: %s",
                    self.client_id,
                    ack.batches,
                    ack.topic,
                    problem,
                )

    async def _store(self, group: list[Decoded]) -> list[BatchOutcome]:
        try:
            async with asyncio.timeout(self._settings.write_timeout_s):
                return await self._writer.write(group)
        except TimeoutError:
            raise StorageUnavailable(
                f"writing a group of {len(group)} messages took over "
                f"{self._settings.write_timeout_s} s",
                query="ingest",
            ) from None
        except StorageError:
            raise
        except Exception as exc:
            if len(group) > 1:
                log.warning("ingest %s: group failed (%r); writing one by one", self.client_id, exc)
                return [outcome for message in group for outcome in await self._store([message])]
            return await self._poisoned(group[0], exc)

    async def _poisoned(self, message: Decoded, exc: Exception) -> list[BatchOutcome]:
        """Count a failure of ``message`` alone; quarantine it at the last allowed one.

        Until then the failure is raised, so the session ends and the message comes back
        after the backoff. Strikes are kept per topic and payload digest, for the most
        recent messages only, since a redelivery arrives within seconds.
        """
        key = (message.topic, hashlib.sha256(message.payload).digest())
        strikes = self._strikes.pop(key, 0) + 1
        if strikes < self._settings.poison_attempts:
            self._strikes[key] = strikes
            while len(self._strikes) > _STRIKES_KEPT:
                self._strikes.popitem(last=False)
            log.exception(
                "ingest %s: message on %s failed (%d of %d attempts)",
                self.client_id,
                message.topic,
                strikes,
                self._settings.poison_attempts,
                exc_info=exc,
            )
            raise exc
        self._counters.poisoned += 1
        reason = f"ingest failed on this message {strikes} times: {exc!r}"
        return await self._writer.quarantine(message, reason)


def _sealed_at(group: list[Decoded], outcomes: list[BatchOutcome]) -> list[datetime]:
    """When the gateways sealed the batches of ``group`` that were stored (not repeats,
    not quarantined)."""
    return [
        decoded.batch.sent_at
        for decoded, outcome in zip(group, outcomes, strict=True)
        if outcome.kind == "stored" and decoded.batch is not None
    ]


@dataclass(slots=True)
class _Arrival:
    """A message waiting for its PUBACK, and what became of it once its group committed."""

    message: Publish
    outcome: BatchOutcome | None = None


class _InOrder:
    """Sends PUBACKs in the order the messages arrived.

    MQTT asks a receiver to acknowledge QoS 1 messages in the order they arrived; a
    group that is split and written one message at a time settles its messages in
    pieces, and this keeps their PUBACKs in order. A message is counted
    (``IngestCounters.record``) as it is acknowledged.
    """

    def __init__(self, paho: PahoDirect, counters: IngestCounters) -> None:
        self._paho = paho
        self._counters = counters
        self._waiting: deque[_Arrival] = deque()

    def arrived(self, message: Publish) -> _Arrival:
        """Note ``message``'s place in the order."""
        arrival = _Arrival(message)
        self._waiting.append(arrival)
        return arrival

    def settle(self, arrivals: Sequence[_Arrival], outcomes: Sequence[BatchOutcome]) -> None:
        """Record the committed ``arrivals``' outcomes, then acknowledge every message
        from the oldest up to the first one still uncommitted."""
        for arrival, outcome in zip(arrivals, outcomes, strict=True):
            arrival.outcome = outcome
        waiting = self._waiting
        while waiting and (settled := waiting[0].outcome) is not None:
            self._paho.ack(waiting.popleft().message)
            self._counters.record(settled)


class _Group:
    """Messages gathered for one transaction, with their decoded batches."""

    __slots__ = ("arrivals", "decoded", "readings")

    def __init__(self) -> None:
        self.arrivals: list[_Arrival] = []
        self.decoded: list[Decoded] = []
        self.readings = 0

    def add(self, arrival: _Arrival, decoded: Decoded) -> None:
        self.arrivals.append(arrival)
        self.decoded.append(decoded)
        self.readings += decoded.items

    def full(self, limits: IngestSettings) -> bool:
        return (
            self.readings >= limits.group_max_readings
            or len(self.arrivals) >= limits.group_max_messages
        )


class _Lane:
    """One writer's messages: the groups gathered for it, oldest first, and its handoff.

    Only the newest group is open; a full one is closed and the next message opens
    another. An ``urgent`` lane's groups are due at once (alarms); the others' when
    full or when their first message has waited ``group_max_wait_s``.
    """

    def __init__(self, limits: IngestSettings, *, urgent: bool, wake: Callable[[], None]) -> None:
        self._limits = limits
        self._urgent = urgent
        self.groups: deque[_Group] = deque()
        self.backlog: deque[_Arrival] = deque()
        """Messages received while a full group waits behind another, not decoded yet:
        a decoded batch takes several times the memory of its payload."""
        self.handoff = _Handoff(wake)

    def add(self, arrival: _Arrival) -> None:
        """Take ``arrival``, decoded into the open group when the lane has room."""
        self.backlog.append(arrival)
        self.refill()

    def refill(self) -> None:
        """Decode backlog messages, in order, into the open group (opening one if there
        is none or it is full) while the lane has room."""
        backlog = self.backlog
        while backlog and not self._crowded():
            arrival = backlog.popleft()
            if not self.groups or self.groups[-1].full(self._limits):
                self.groups.append(_Group())
            message = arrival.message
            decoded = decode_message(
                message.topic, message.payload, max_payload_bytes=self._limits.max_payload_bytes
            )
            self.groups[-1].add(arrival, decoded)

    def _crowded(self) -> bool:
        return len(self.groups) >= 2 and self.groups[-1].full(self._limits)

    def due_at(self) -> float | None:
        """Loop time at which the oldest group is due (perhaps past); None without one."""
        if not self.groups:
            return None
        oldest = self.groups[0]
        opened = oldest.arrivals[0].message.received
        if self._urgent or oldest.full(self._limits):
            return opened
        return opened + self._limits.group_max_wait_s


class _Handoff:
    """One group at a time from the gathering task to one writing task.

    ``free`` is true while the writer waits for a group, and ``wake`` is called as it
    becomes so; the gatherer hands one over only then, so handing over never waits.
    """

    def __init__(self, wake: Callable[[], None]) -> None:
        self._groups: asyncio.Queue[_Group] = asyncio.Queue(maxsize=1)
        self._wake = wake
        self.free = False

    def put(self, group: _Group) -> None:
        """Hand ``group`` over; only while ``free``."""
        self._groups.put_nowait(group)
        self.free = False

    async def take(self) -> _Group:
        """The next group, waiting (and saying so through ``free``) until there is one."""
        if self._groups.empty():
            self.free = True
            self._wake()
        group = await self._groups.get()
        self.free = False
        return group


async def _first_failure(*jobs: Coroutine[Any, Any, None]) -> None:
    """Run ``jobs`` until one ends; cancel the rest and raise its error, if any.

    Unlike a TaskGroup this raises the error itself, not an ExceptionGroup, so the
    session's caller can tell a broker failure from a database one.
    """
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        task.result()
