"""The ingest side of MQTT: the only module of ``cloud`` that imports aiomqtt.

An ``IngestConsumer`` keeps one broker connection with a stable client id and a
persistent session (MQTT v5: clean start off and a session expiry interval; v3.1.1:
clean session off), subscribes at QoS 1 to the events and telemetry of every gateway
(through the shared subscription group on v5, so workers split the load), and hands
each message to a ``BatchWriter``. A message is acknowledged to the broker only after
the writer returned, that is after its rows (or its quarantine row) were committed.

When the writer raises ``StorageError`` the message is left unacknowledged and the
consumer drops the connection: the broker keeps the message in the session and
redelivers it after the reconnect, which waits with capped, jittered backoff.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Final

import aiomqtt
from paho.mqtt.client import MQTT_CLEAN_START_FIRST_ONLY, MQTT_ERR_SUCCESS
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud.backoff import Backoff
from cloud.errors import StorageError, StorageUnavailable
from cloud.ingest.counters import IngestCounters
from cloud.ingest.writer import BatchWriter
from cloud.settings import IngestSettings
from schemas.broker import BrokerAddress
from schemas.topics import Channel, subscription

log = logging.getLogger(__name__)

INGESTED_CHANNELS: Final = (Channel.EVENTS, Channel.TELEMETRY)
"""Events first: alarms travel on their own topic, ahead of telemetry."""

_BROKER_TIMEOUT_S: Final = 10.0


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
    """One ingest worker: one broker session, messages written and acknowledged in order.

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
    ) -> None:
        self._broker = broker
        self._shared_group = shared_group
        self._settings = settings
        self._writer = writer
        self._counters = counters
        self.client_id = client_id
        self._backoff = Backoff(initial=settings.backoff_initial_s, cap=settings.backoff_cap_s)
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
                    "ingest %s: database failed, message left for redelivery: %s",
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
            tls_context=ssl.create_default_context() if self._broker.tls else None,
            timeout=_BROKER_TIMEOUT_S,
            max_queued_incoming_messages=self._settings.max_queued_messages,
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
            async for message in client.messages:
                payload = message.payload
                data = bytes(payload) if isinstance(payload, bytes | bytearray) else b""
                try:
                    async with asyncio.timeout(self._settings.write_timeout_s):
                        outcome = await self._writer.write(message.topic.value, data)
                except TimeoutError:
                    raise StorageUnavailable(
                        f"writing a batch took over {self._settings.write_timeout_s} s",
                        query="ingest",
                    ) from None
                acks.ack(message)
                self._counters.record(outcome)
                self._backoff.reset()
