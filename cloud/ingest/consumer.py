"""The ingest side of MQTT: the only module of ``cloud.ingest`` that imports aiomqtt
(``cloud.broker.dynsec`` and ``cloud.configs.link`` are the others in ``cloud``).

An ``IngestConsumer`` keeps one broker connection with a stable client id and a
persistent session (MQTT v5: clean start off, a session expiry interval and a Receive
Maximum; v3.1.1: clean session off), subscribes at QoS 1 to the events and telemetry of
every gateway (through the shared subscription group on v5, so workers here and on
other machines split the load), and writes what arrives in groups: one transaction per
group, bounded by readings, messages and waiting time. A message carrying events closes
its group at once, so an alarm never waits for telemetry to gather.

Two tasks run per session: one decodes messages and gathers groups while the other
writes the previous group, so Python's share of the work overlaps the database's.
Messages are acknowledged to the broker, in the order they arrived, only after their
group committed. When the database fails, nothing of the group is acknowledged and the
consumer drops the connection: the broker keeps the messages in the session and
redelivers them after the reconnect, which waits with capped, jittered backoff.

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
from collections import OrderedDict
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import aiomqtt
from paho.mqtt.client import MQTT_CLEAN_START_FIRST_ONLY, MQTT_ERR_SUCCESS
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud.backoff import Backoff
from cloud.errors import StorageError, StorageUnavailable
from cloud.ingest.counters import BatchOutcome, IngestCounters
from cloud.ingest.writer import BatchWriter, Decoded, decode_message
from cloud.settings import IngestSettings
from schemas.broker import BrokerAddress
from schemas.topics import Channel, subscription

log = logging.getLogger(__name__)

INGESTED_CHANNELS: Final = (Channel.EVENTS, Channel.TELEMETRY)
"""Events first: alarms travel on their own topic, ahead of telemetry."""

_BROKER_TIMEOUT_S: Final = 10.0
_STRIKES_KEPT: Final = 1000


class ManualAck:
    """Acknowledges QoS 1 messages when told to, instead of on receipt.

    aiomqtt 2.5 acknowledges every message as it hands it over and has no public way
    to defer that (aiomqtt issue #345), which would let a crash between receipt and
    commit lose a message. paho-mqtt, underneath, supports manual acknowledgement;
    this class reaches it through aiomqtt's private ``_client``. It is the only place
    that does, so when aiomqtt gains the feature only this class changes.

    Create it before the client connects: paho reads the flag as messages arrive.
    """

    def __init__(self, client: aiomqtt.Client) -> None:
        self._paho = client._client
        self._paho.manual_ack_set(True)

    def ack(self, message: aiomqtt.Message) -> None:
        """Send the PUBACK for ``message``; raises MqttError if it cannot be sent."""
        if message.qos == 0:
            return
        result = self._paho.ack(message.mid, message.qos)
        if result != MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttError(f"could not acknowledge message {message.mid}: {result}")


def subscriptions(shared_group: str | None) -> list[str]:
    """Topic filters of ingest: shared among ``shared_group``, or plain when None."""
    return [subscription(channel, shared_group=shared_group) for channel in INGESTED_CHANNELS]


class IngestConsumer:
    """One ingest worker: one broker session, groups written and acknowledged in order.

    ``client_id`` must be stable across restarts and distinct per worker: the broker
    keeps the session (and the unacknowledged messages) under it.
    """

    def __init__(
        self,
        broker: BrokerAddress,
        settings: IngestSettings,
        writer: BatchWriter,
        counters: IngestCounters,
        *,
        client_id: str,
        shared_group: str | None = None,
        ca_file: Path | None = None,
    ) -> None:
        """``ca_file``: the CA of an ``mqtts://`` broker; None trusts the system's."""
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
            properties.SessionExpiryInterval = self._settings.session_expiry_s
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
        client = self._client()
        acks = ManualAck(client)
        async with client:
            # A worker that changed between plain and shared since its session was made
            # would otherwise keep the old filter too and see every message twice.
            other = None if self._shared_group else self._settings.group
            if self._broker.supports_shared_subscriptions or other is None:
                await client.unsubscribe(subscriptions(other), timeout=_BROKER_TIMEOUT_S)
            for topic in subscriptions(self._shared_group):
                await client.subscribe(topic, qos=1, timeout=_BROKER_TIMEOUT_S)
            log.info("ingest %s: subscribed on %s", self.client_id, self._broker.redacted())
            self.subscribed.set()
            handoff = _Handoff()
            await _first_failure(self._gather(client, handoff), self._write(handoff, acks))

    async def _gather(self, client: aiomqtt.Client, handoff: _Handoff) -> None:
        """Decode arriving messages into groups and hand each over when it is due.

        A group is due when it carries events, or its first message has waited
        ``group_max_wait_s``; it is handed over as soon as the writer is free, and
        until then it keeps growing (up to the size bounds), so groups grow with the
        load and the database gets fewer, larger transactions when it is busiest.
        """
        settings = self._settings
        loop = asyncio.get_running_loop()
        messages = aiter(client.messages)
        # One receive in flight at a time, never cancelled while the session lives:
        # cancelling aiomqtt's receive as it completes would drop a message unacknowledged.
        receive = asyncio.ensure_future(anext(messages))
        writer_free: asyncio.Future[Any] | None = None
        group, due, urgent = _Group(), 0.0, False
        try:
            while True:
                waits: set[asyncio.Future[Any]] = {receive}
                timeout = None
                if group.messages and (urgent or loop.time() >= due):
                    if writer_free is None or writer_free.done():
                        writer_free = asyncio.ensure_future(handoff.free.wait())
                    waits.add(writer_free)
                elif group.messages:
                    timeout = due - loop.time()
                done, _ = await asyncio.wait(
                    waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                if receive in done:
                    message = receive.result()
                    receive = asyncio.ensure_future(anext(messages))
                    payload = message.payload
                    data = bytes(payload) if isinstance(payload, bytes | bytearray) else b""
                    decoded = decode_message(message.topic.value, data)
                    if not group.messages:
                        due = loop.time() + settings.group_max_wait_s
                    group.add(message, decoded)
                    urgent = urgent or decoded.carries_events
                    if (
                        group.readings >= settings.group_max_readings
                        or len(group.messages) >= settings.group_max_messages
                    ):
                        await handoff.put(group)
                        group, urgent = _Group(), False
                        continue
                if group.messages and (urgent or loop.time() >= due) and handoff.free.is_set():
                    await handoff.put(group)
                    group, urgent = _Group(), False
        finally:
            receive.cancel()
            if writer_free is not None:
                writer_free.cancel()

    async def _write(self, handoff: _Handoff, acks: ManualAck) -> None:
        """Write handed-over groups in order; acknowledge each message after its commit."""
        while True:
            group = await handoff.take()
            outcomes = await self._store(group.decoded)
            self._counters.record_group(
                _sealed_at(group.decoded, outcomes), committed_at=datetime.now(UTC)
            )
            for message, outcome in zip(group.messages, outcomes, strict=True):
                acks.ack(message)
                self._counters.record(outcome)
            self._backoff.reset()

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


class _Group:
    """Messages gathered for one transaction, with their decoded batches."""

    __slots__ = ("decoded", "messages", "readings")

    def __init__(self) -> None:
        self.messages: list[aiomqtt.Message] = []
        self.decoded: list[Decoded] = []
        self.readings = 0

    def add(self, message: aiomqtt.Message, decoded: Decoded) -> None:
        self.messages.append(message)
        self.decoded.append(decoded)
        self.readings += decoded.items


class _Handoff:
    """One group at a time from the gathering task to the writing task.

    ``free`` is set while the writer waits for a group, so the gatherer can keep a due
    group growing while the writer is busy and hand it over the moment it is free.
    """

    def __init__(self) -> None:
        self._groups: asyncio.Queue[_Group] = asyncio.Queue(maxsize=1)
        self.free = asyncio.Event()

    async def put(self, group: _Group) -> None:
        """Hand ``group`` over; waits while the previous one is not taken yet."""
        await self._groups.put(group)
        self.free.clear()

    async def take(self) -> _Group:
        """The next group, waiting (and saying so through ``free``) until there is one."""
        if self._groups.empty():
            self.free.set()
        group = await self._groups.get()
        self.free.clear()
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
