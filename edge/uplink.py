"""The gateway's MQTT connection: the only module of the agent that imports aiomqtt.

Publishes sealed batches at QoS 1 and drops each from the outbox only after the
broker's PUBACK. The retained status topic says online; the Last Will, registered at
connect, says offline when the gateway vanishes without a goodbye.
"""

import asyncio
import logging
from datetime import UTC, datetime
from enum import StrEnum

import aiomqtt

from edge.backoff import Backoff
from edge.outbox import Outbox, SealedBatch
from schemas.broker import BrokerAddress
from schemas.topics import Channel, topic_for
from schemas.wire import GatewayState, Status, encode

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 10.0


class UplinkState(StrEnum):
    CONNECTING = "connecting"
    ONLINE = "online"
    OFFLINE = "offline"
    STOPPED = "stopped"


class Uplink:
    """Keeps one broker connection alive and drains the outbox through it."""

    def __init__(
        self,
        broker: BrokerAddress,
        outbox: Outbox,
        *,
        agent_version: str,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self._broker = broker
        self._outbox = outbox
        self._agent_version = agent_version
        self._connect_timeout_s = connect_timeout_s
        self._status_topic = topic_for(outbox.community, outbox.gateway, Channel.STATUS)
        self.state = UplinkState.CONNECTING
        self.published_batches = 0
        self.published_items = 0
        self.connection_failures = 0

    def _status(self, state: GatewayState) -> bytes:
        return encode(
            Status(
                gateway=self._outbox.gateway,
                community=self._outbox.community,
                state=state,
                at=datetime.now(UTC),
                agent_version=self._agent_version,
            )
        )

    def _client(self) -> aiomqtt.Client:
        protocol = (
            aiomqtt.ProtocolVersion.V5
            if self._broker.version == "5"
            else aiomqtt.ProtocolVersion.V311
        )
        return aiomqtt.Client(
            self._broker.host,
            self._broker.port,
            username=self._broker.username,
            password=self._broker.password,
            identifier=f"anju-gw-{self._outbox.gateway}",
            protocol=protocol,
            will=aiomqtt.Will(
                self._status_topic, self._status(GatewayState.OFFLINE), qos=1, retain=True
            ),
            tls_params=aiomqtt.TLSParameters() if self._broker.tls else None,
            timeout=self._connect_timeout_s,
        )

    async def run(self, stop: asyncio.Event, *, drain_timeout_s: float = 10.0) -> None:
        """Send batches until ``stop`` is set, then drain what is left and say offline.

        Reconnects with backoff after any broker error; a batch that was not
        acknowledged stays at the head of its lane and goes again, byte for byte.
        """
        backoff = Backoff()
        while not stop.is_set():
            try:
                async with self._client() as client:
                    await client.publish(
                        self._status_topic, self._status(GatewayState.ONLINE), qos=1, retain=True
                    )
                    self.state = UplinkState.ONLINE
                    backoff.reset()
                    log.info("uplink online to %s", self._broker.redacted())
                    await self._drain(client, stop)
                    try:
                        await self._drain_rest(client, drain_timeout_s)
                    except TimeoutError:
                        log.error("stopping with %s batches unsent", self._outbox.depth)
                    await client.publish(
                        self._status_topic, self._status(GatewayState.OFFLINE), qos=1, retain=True
                    )
            except aiomqtt.MqttError as exc:
                self.connection_failures += 1
                if self.state is not UplinkState.OFFLINE:
                    log.warning("uplink to %s lost: %s", self._broker.redacted(), exc)
                self.state = UplinkState.OFFLINE
                delay = backoff.next_delay()
                try:
                    await asyncio.wait_for(stop.wait(), timeout=delay)
                except TimeoutError:
                    continue
        self.state = UplinkState.STOPPED

    async def _send(self, client: aiomqtt.Client, batch: SealedBatch) -> None:
        topic = topic_for(self._outbox.community, self._outbox.gateway, batch.channel)
        await client.publish(topic, batch.payload, qos=1, timeout=PUBLISH_TIMEOUT_S)
        self._outbox.done(batch)
        self.published_batches += 1
        self.published_items += batch.items

    async def _drain(self, client: aiomqtt.Client, stop: asyncio.Event) -> None:
        stopping = asyncio.create_task(stop.wait(), name="uplink-stop")
        try:
            while True:
                taking = asyncio.create_task(self._outbox.take(), name="uplink-take")
                done, _ = await asyncio.wait(
                    {taking, stopping}, return_when=asyncio.FIRST_COMPLETED
                )
                if taking not in done:
                    taking.cancel()
                    return
                await self._send(client, taking.result())
        finally:
            stopping.cancel()

    async def _drain_rest(self, client: aiomqtt.Client, timeout_s: float) -> None:
        self._outbox.flush()
        async with asyncio.timeout(timeout_s):
            while not self._outbox.empty:
                await self._send(client, await self._outbox.take())
