"""The gateway's MQTT connection: the only module of the agent that imports aiomqtt.

Publishes sealed batches from the spool at QoS 1, several at once (``max_in_flight``).
A broker's PUBACK only marks a batch sent (``Spool.sent``); the batch is deleted when
the cloud acknowledges it, after its commit, on the gateway's own ``ack`` topic
(``BatchAck``), to which the uplink subscribes (QoS 1) before it publishes any batch.
So a batch is either committed in the cloud or still on disk, whatever the broker does
with it. A batch handed out but not PUBACKed goes again after a reconnect; a sent one
goes again when its ack timeout has passed (``Spool``), byte for byte; the cloud drops
repeats per batch and acknowledges them again.

The acknowledgement names each batch by (``spool_epoch``, ``batch_seq``) with an
outcome: stored or duplicate delete it; refused (quarantined in the cloud, or another
content under a stored key) deletes it too, since resending cannot change it, and is
counted (``refused_batches``) and logged with the cloud's reason once per batch.
Batches of another spool epoch (an older spool file of this gateway) are ignored. An
acknowledgement the uplink cannot read, of another wire version above all, is logged
(once until a readable one comes) and counted, and never ends the connection: its
batches stay in the spool and are resent, so nothing is lost while the versions differ.
Acknowledgements are handled as they arrive, never behind a command being carried out.

A PUBACK is checked, not just awaited: aiomqtt 2.5 reports a publish as done for any
PUBACK, including an MQTT v5 refusal (reason code 0x80 or more, such as 0x87 "not
authorised" when the broker's ACL denies the topic), which would delete a batch the
broker threw away. ``_Link`` reads the reason code from paho underneath, and a refusal
keeps the batch, is logged with topic and reason, and ends the connection (retried
with backoff, so a fixed ACL is picked up within the backoff cap).

The retained status topic says online, with the pushed config version the gateway
runs (published again by ``announce`` when that changes); the Last Will, registered
at connect, says offline when the gateway vanishes without a goodbye. With an
``on_command`` hook the uplink also takes commands (QoS 1, persistent session so
commands sent while the gateway was offline arrive at reconnect) and publishes each
result before acknowledging the command, so a command whose result was not sent comes
again. A hook that fails or overruns ``command_timeout_s`` still gets an answer out: an
error CommandResult for that id, so the cloud is never left waiting.

Credentials are rotated without a restart: when the broker refuses the CONNECT as
bad credentials or not authorised, or refuses a publish as not authorised, and a
``relogin`` hook is given (the agent was started from a file), the next attempt reads
the broker URL and TLS files from it again. The spool is not touched, so whatever
waited for the new credentials goes out with them.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.client import MQTT_CLEAN_START_FIRST_ONLY, MQTT_ERR_SUCCESS, DisconnectFlags
from paho.mqtt.client import Client as PahoClient
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge.backoff import Backoff, pause
from edge.errors import EdgeError, UplinkError
from edge.spool import SealedBatch, Spool
from schemas.broker import BrokerAddress
from schemas.errors import SchemaError, SchemaVersionMismatch, WireError
from schemas.topics import Channel, topic_for
from schemas.wire import (
    AckOutcome,
    BatchAck,
    CommandResult,
    GatewayState,
    Status,
    decode,
    encode,
)

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 10.0

ACK_GRACE_S = 2.0
"""At a stop, how long the uplink waits for the cloud to acknowledge what it just sent."""
_GRACE_POLL_S = 0.05

COMMAND_TIMEOUT_S = 600.0
"""The default cap on one command hook call: a safety net, not a deadline.

The command processor bounds itself (``CommandLimits.longest_handle_s``, 180 s with
the default limits: a scan of up to 150 s and its audit writes), and the uplink must
wait at least that long, or it would answer "no result" for a command still running
and holding up the command after it. This cap only catches a hook that hangs.
"""

CommandHook = Callable[[str, bytes], Awaitable[bytes | None]]
"""``on_command(command_id, payload)``: the result payload to publish, or None for none."""

_T = TypeVar("_T")

_CREDENTIALS_REFUSED = frozenset({0x86, 0x87, 0x8C})
"""CONNACK reasons that new credentials may cure: bad user name or password, not
authorised, bad authentication method (MQTT 3.1.1's 4 and 5 arrive from paho as the
first two)."""
_NOT_AUTHORISED = 0x87


@dataclass(frozen=True, slots=True)
class BrokerLogin:
    """Where and as whom the uplink connects: the broker (its URL holds the user and
    password) and the TLS files."""

    broker: BrokerAddress
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


Relogin = Callable[[], BrokerLogin]
"""Reads the login again (from the config file); raises EdgeError or SchemaError when
it cannot."""


class UplinkState(StrEnum):
    CONNECTING = "connecting"
    ONLINE = "online"
    OFFLINE = "offline"
    STOPPED = "stopped"


class PublishRefused(UplinkError):
    """The broker answered a publish with a failure reason code (MQTT v5 PUBACK >= 0x80)."""

    def __init__(self, topic: str, reason: str, code: int) -> None:
        self.topic = topic
        self.reason = reason
        self.code = code
        super().__init__(f"broker refused the publish on {topic}: {reason} (0x{code:02x})")


class _Link:
    """QoS 1 publishing on one aiomqtt client that sees each PUBACK's reason code.

    aiomqtt 2.5 drops the reason code, so this works on the paho client underneath
    (``client._client``, the same private handle manual acknowledgement needs; aiomqtt
    is pinned ``<3``): publishes go to paho directly, and paho's ``on_publish`` and
    ``on_disconnect`` callbacks, chained in front of aiomqtt's, resolve or fail the
    waiting publishes. Install it before connecting.
    """

    def __init__(self, client: aiomqtt.Client, *, manual_ack: bool) -> None:
        self._client = client
        self._paho: PahoClient = client._client
        self._waiting: dict[int, asyncio.Future[ReasonCode]] = {}
        self._forward_publish = client._on_publish
        self._forward_disconnect = client._on_disconnect
        self._paho.on_publish = self._on_publish
        self._paho.on_disconnect = self._on_disconnect
        self._paho.manual_ack_set(manual_ack)

    def _on_publish(
        self,
        client: PahoClient,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        waiter = self._waiting.pop(mid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(reason_code)
        self._forward_publish(client, userdata, mid, reason_code, properties)

    def _on_disconnect(
        self,
        client: PahoClient,
        userdata: Any,
        flags: DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None = None,
    ) -> None:
        waiting, self._waiting = self._waiting, {}
        for waiter in waiting.values():
            if not waiter.done():
                waiter.set_exception(aiomqtt.MqttError(f"disconnected: {reason_code}"))
        self._forward_disconnect(client, userdata, flags, reason_code, properties)
        # aiomqtt keeps the disconnect error for a caller that never asks for it here:
        # the failed publishes above report it, so mark it seen (no "never retrieved").
        disconnected = self._client._disconnected
        if disconnected.done() and not disconnected.cancelled():
            disconnected.exception()

    async def publish(
        self, topic: str, payload: bytes, *, timeout_s: float, retain: bool = False
    ) -> None:
        """Publish at QoS 1 and wait for a successful PUBACK.

        Raises PublishRefused for a failure reason code and aiomqtt.MqttError when the
        connection is gone or no PUBACK came within ``timeout_s``.
        """
        info = self._paho.publish(topic, payload, qos=1, retain=retain)
        if info.rc != MQTT_ERR_SUCCESS:
            raise aiomqtt.MqttCodeError(info.rc, f"could not publish on {topic}")
        waiter = asyncio.get_running_loop().create_future()
        self._waiting[info.mid] = waiter
        try:
            async with asyncio.timeout(timeout_s):
                reason = await waiter
        except TimeoutError:
            raise aiomqtt.MqttError(f"no PUBACK on {topic} within {timeout_s} s") from None
        finally:
            self._waiting.pop(info.mid, None)
        if reason.is_failure:
            raise PublishRefused(topic, str(reason), int(reason.value))

    def ack(self, message: aiomqtt.Message) -> None:
        """Acknowledge a received QoS 1 message (manual acknowledgement is on)."""
        self._paho.ack(message.mid, message.qos)


class Uplink:
    """Keeps one broker connection alive and drains the spool through it.

    ``max_in_flight`` batches are published at once, each marked sent in the spool when
    its own PUBACK arrives and deleted when the cloud acknowledges it. TLS is used for
    ``mqtts://`` brokers, with the system's CA certificates or ``ca_file``, and a client
    certificate when ``cert_file`` is given; user and password come from the broker URL.
    """

    def __init__(
        self,
        broker: BrokerAddress,
        spool: Spool,
        *,
        agent_version: str,
        connect_timeout_s: float = 10.0,
        publish_timeout_s: float = PUBLISH_TIMEOUT_S,
        max_in_flight: int = 8,
        ca_file: Path | None = None,
        cert_file: Path | None = None,
        key_file: Path | None = None,
        on_command: CommandHook | None = None,
        command_timeout_s: float = COMMAND_TIMEOUT_S,
        session_expiry_s: int = 7 * 24 * 3600,
        backoff: Backoff | None = None,
        config_version: Callable[[], int] = lambda: 0,
        relogin: Relogin | None = None,
    ) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, not {max_in_flight}")
        self._broker = broker
        self._spool = spool
        self._agent_version = agent_version
        self._connect_timeout_s = connect_timeout_s
        self._publish_timeout_s = publish_timeout_s
        self._max_in_flight = max_in_flight
        self._ca_file = ca_file
        self._cert_file = cert_file
        self._key_file = key_file
        self._on_command = on_command
        self._command_timeout_s = command_timeout_s
        self._session_expiry_s = session_expiry_s
        self._backoff = backoff or Backoff()
        self._config_version = config_version
        self._relogin = relogin
        self._announce = asyncio.Event()
        self._status_topic = topic_for(spool.community, spool.gateway, Channel.STATUS)
        self._ack_topic = topic_for(spool.community, spool.gateway, Channel.ACK)
        self._ack_unreadable = False
        """An unreadable acknowledgement was logged; quiet until a readable one comes."""
        self.state = UplinkState.CONNECTING
        self.published_batches = 0
        self.published_items = 0
        self.connection_failures = 0
        self.refused_publishes = 0
        self.internal_errors = 0
        self.commands_handled = 0
        self.command_failures = 0
        self.in_flight = 0
        self.max_in_flight_seen = 0
        self.relogins = 0
        """Times the login was read again after the broker refused the credentials."""
        self.acknowledged_batches = 0
        """Batches the cloud acknowledged as stored or duplicate (deleted from the spool)."""
        self.refused_batches = 0
        """Batches the cloud acknowledged as refused (deleted, never resent)."""
        self.resent_batches = 0
        """Publishes of a batch the broker had PUBACKed before: no acknowledgement came."""
        self.unreadable_acks = 0
        """Acknowledgements that could not be read (other wire version included)."""
        self.ack_version_mismatches = 0
        """Of those, acknowledgements of another schema version."""

    def announce(self) -> None:
        """Publish the status again (retained) on the live connection, or at the next
        connect: the pushed config version changed."""
        self._announce.set()

    def _status(self, state: GatewayState) -> bytes:
        return encode(
            Status(
                gateway=self._spool.gateway,
                community=self._spool.community,
                state=state,
                at=datetime.now(UTC),
                agent_version=self._agent_version,
                config_version=self._config_version(),
            )
        )

    def _client(self) -> aiomqtt.Client:
        v5 = self._broker.version == "5"
        persistent = self._on_command is not None
        properties = None
        if v5 and persistent:
            properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            properties.SessionExpiryInterval = self._session_expiry_s
        tls = None
        if self._broker.tls:
            tls = aiomqtt.TLSParameters(
                ca_certs=str(self._ca_file) if self._ca_file else None,
                certfile=str(self._cert_file) if self._cert_file else None,
                keyfile=str(self._key_file) if self._key_file else None,
            )
        client = aiomqtt.Client(
            self._broker.host,
            self._broker.port,
            username=self._broker.username,
            password=self._broker.password,
            identifier=f"anju-gw-{self._spool.gateway}",
            protocol=aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
            will=aiomqtt.Will(
                self._status_topic, self._status(GatewayState.OFFLINE), qos=1, retain=True
            ),
            clean_session=None if v5 else not persistent,
            # paho refuses any clean-start setting but its default on MQTT 3.1.1, where
            # clean_session above says whether the session persists.
            clean_start=(not persistent) if v5 else MQTT_CLEAN_START_FIRST_ONLY,
            properties=properties,
            max_inflight_messages=self._max_in_flight + 4,
            tls_params=tls,
            timeout=self._connect_timeout_s,
        )
        client.pending_calls_threshold = self._max_in_flight + 4
        return client

    async def run(self, stop: asyncio.Event, *, drain_timeout_s: float = 10.0) -> None:
        """Send batches until ``stop`` is set, then drain what is left and say offline.

        Reconnects with exponential backoff and full jitter after any broker error; a
        batch that was not acknowledged stays in the spool and goes again, byte for
        byte.
        """
        refused = False
        while not stop.is_set():
            client = self._client()
            link = _Link(client, manual_ack=self._on_command is not None)
            try:
                async with client:
                    self._spool.rewind()
                    self._announce.clear()
                    await link.publish(
                        self._status_topic,
                        self._status(GatewayState.ONLINE),
                        retain=True,
                        timeout_s=self._publish_timeout_s,
                    )
                    await self._subscribe_acks(client)
                    self.state = UplinkState.ONLINE
                    if not refused:
                        # A broker that refuses our publishes keeps the backoff growing.
                        self._backoff.reset()
                    log.info("uplink online to %s", self._broker.redacted())
                    await self._serve(client, link, stop, drain_timeout_s)
                    await link.publish(
                        self._status_topic,
                        self._status(GatewayState.OFFLINE),
                        retain=True,
                        timeout_s=self._publish_timeout_s,
                    )
            except (aiomqtt.MqttError, EdgeError) as exc:
                refused = isinstance(exc, PublishRefused)
                self.refused_publishes += refused
                if self.state is not UplinkState.OFFLINE:
                    log.warning("uplink to %s lost: %s", self._broker.redacted(), exc)
                if _credentials_refused(exc):
                    self._read_login_again(exc)
            except Exception:
                # The task's outer loop: an uplink that died would take the agent, and
                # its fire linkage, down with it. Whatever this was, it is logged with
                # its traceback, counted, and the connection is tried again.
                refused = False
                self.internal_errors += 1
                log.exception("uplink to %s failed unexpectedly", self._broker.redacted())
            else:
                continue
            self.connection_failures += 1
            self.state = UplinkState.OFFLINE
            await pause(stop, self._backoff.next_delay())
        self.state = UplinkState.STOPPED

    async def _subscribe_acks(self, client: aiomqtt.Client) -> None:
        """Subscribe to the cloud's acknowledgements before any batch goes out.

        A refused subscription is logged, not fatal: alarms must still reach the cloud,
        and every batch stays in the spool (resent at its ack timeout, counted in the
        budget) until an acknowledgement can arrive.
        """
        refusal = await _subscribe(client, self._ack_topic, self._publish_timeout_s)
        if refusal is not None:
            log.error(
                "broker refused the subscription to %s (%s): batches are sent but the cloud's "
                "acknowledgements cannot arrive, so each is resent at its ack timeout and "
                "the spool fills; grant the gateway subscribe on its ack topic",
                self._ack_topic,
                refusal,
            )

    def _read_login_again(self, refusal: Exception) -> None:
        """After ``refusal``, take the broker URL and TLS files from ``relogin``."""
        if self._relogin is None:
            return
        try:
            login = self._relogin()
        except (EdgeError, SchemaError) as exc:
            log.warning(
                "broker refused our credentials (%s); re-reading them failed: %s", refusal, exc
            )
            return
        current = BrokerLogin(self._broker, self._ca_file, self._cert_file, self._key_file)
        if login == current:
            log.warning(
                "broker %s refused our credentials (%s); the config file still holds the "
                "same ones (rotate them with anju provision rotate)",
                self._broker.redacted(),
                refusal,
            )
            return
        self._broker = login.broker
        self._ca_file, self._cert_file, self._key_file = (
            login.ca_file,
            login.cert_file,
            login.key_file,
        )
        self.relogins += 1
        log.warning(
            "broker refused our credentials (%s); the next attempt uses those the config "
            "file holds now (%s)",
            refusal,
            self._broker.redacted(),
        )

    async def _serve(
        self, client: aiomqtt.Client, link: _Link, stop: asyncio.Event, drain_timeout_s: float
    ) -> None:
        """Publish until ``stop``, then until every batch is sent (PUBACKed) or
        ``drain_timeout_s`` has passed.

        Raises the first failure of any publish or of a helper task (status, commands,
        the reader of acknowledgements and commands).
        """
        failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        sends: set[asyncio.Task[None]] = set()
        slots = asyncio.Semaphore(self._max_in_flight)

        def settle(task: asyncio.Task[None]) -> None:
            sends.discard(task)
            slots.release()
            self.in_flight = len(sends)
            if task.cancelled():
                return
            exc = task.exception()
            if exc is not None and not failed.done():
                failed.set_exception(exc)

        def start(batch: SealedBatch) -> None:
            task = asyncio.create_task(
                self._send(link, batch), name=f"uplink-send-{batch.batch_seq}"
            )
            sends.add(task)
            self.in_flight = len(sends)
            self.max_in_flight_seen = max(self.max_in_flight_seen, self.in_flight)
            task.add_done_callback(settle)

        commands: asyncio.Queue[aiomqtt.Message] | None = None
        helpers = [asyncio.create_task(self._announce_status(link), name="uplink-status")]
        if self._on_command is not None:
            commands = asyncio.Queue()
            helpers.append(
                asyncio.create_task(
                    self._serve_commands(client, link, commands), name="uplink-commands"
                )
            )
        helpers.append(
            asyncio.create_task(self._read_messages(client, link, commands), name="uplink-read")
        )
        for helper in helpers:
            helper.add_done_callback(
                lambda task: (
                    None
                    if task.cancelled() or failed.done()
                    else failed.set_exception(
                        task.exception() or UplinkError(f"{task.get_name()} ended")
                    )
                )
            )
        try:
            while await self._race(slots.acquire(), stop, failed):
                batch = await self._race(self._spool.take(), stop, failed)
                if batch is None:
                    slots.release()
                    break
                start(batch)
            try:
                async with asyncio.timeout(drain_timeout_s):
                    await self._finish(sends, slots, failed, start)
            except TimeoutError:
                self._log_left_over()
        finally:
            pending = [*sends, *helpers]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if failed.done() and not failed.cancelled():
                failed.exception()

    async def _race(
        self, work: Coroutine[Any, Any, _T], stop: asyncio.Event, failed: asyncio.Future[None]
    ) -> _T | None:
        """``work``'s result, or None once ``stop`` is set; raises when a publish failed."""
        task = asyncio.ensure_future(work)
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({task, stopping, failed}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            # Also when the uplink itself is cancelled: an orphaned spool.take() would
            # outlive the spool it reads.
            stopping.cancel()
            if not task.done():
                task.cancel()
        if failed.done():
            failed.result()
        return task.result() if task.done() and not task.cancelled() else None

    async def _finish(
        self,
        sends: set[asyncio.Task[None]],
        slots: asyncio.Semaphore,
        failed: asyncio.Future[None],
        start: Callable[[SealedBatch], None],
    ) -> None:
        """Seal what lingers and publish until nothing is left to send, then give the
        cloud ``ACK_GRACE_S`` to acknowledge it (all bounded by the caller).

        The cloud acknowledges within milliseconds of a commit, so the grace normally
        leaves the spool empty; a cloud that is down or behind must not hold up a stop
        for longer. What stays is not lost: a gateway with a persistent session
        (commands on) gets the acknowledgements published meanwhile at its next
        connect, and without one a sent batch goes again after its ack timeout, which
        the cloud absorbs.
        """
        while True:
            # Sealed at each turn: a last poll may add readings after the first flush.
            self._spool.flush()
            if failed.done():
                failed.result()
            batch = None if slots.locked() else self._spool.take_nowait()
            if batch is not None:
                await slots.acquire()
                start(batch)
            elif sends:
                await asyncio.wait({*sends, failed}, return_when=asyncio.FIRST_COMPLETED)
            else:
                break
        loop = asyncio.get_running_loop()
        grace_ends = loop.time() + ACK_GRACE_S
        while (sent := sum(self._spool.sent_unacked.values())) and loop.time() < grace_ends:
            # Acknowledgements change the spool without waking anything here: look again.
            await asyncio.wait({failed}, timeout=_GRACE_POLL_S)
            if failed.done():
                failed.result()
        if sent:
            log.info(
                "stopping with %d batches sent and not acknowledged by the cloud yet; they "
                "stay in the spool until it does",
                sent,
            )

    def _log_left_over(self) -> None:
        """At a drain timeout: what stays in the spool for the next start."""
        sent = sum(self._spool.sent_unacked.values())
        log.error(
            "stopping with %d batches unsent (and %d sent, not acknowledged by the cloud yet)",
            sum(self._spool.depth.values()) - sent,
            sent,
        )

    async def _send(self, link: _Link, batch: SealedBatch) -> None:
        topic = topic_for(self._spool.community, self._spool.gateway, batch.channel)
        self.resent_batches += batch.attempts > 0
        try:
            await link.publish(topic, batch.payload, timeout_s=self._publish_timeout_s)
        except PublishRefused as exc:
            log.error(
                "broker refused batch %d (%d items) on %s: %s (0x%02x); it stays in the spool",
                batch.batch_seq,
                batch.items,
                topic,
                exc.reason,
                exc.code,
            )
            raise
        self._spool.sent(batch)
        self.published_batches += 1
        self.published_items += batch.items

    async def _announce_status(self, link: _Link) -> None:
        """Publish the status again whenever ``announce`` asks, until cancelled."""
        while True:
            await self._announce.wait()
            self._announce.clear()
            await link.publish(
                self._status_topic,
                self._status(GatewayState.ONLINE),
                retain=True,
                timeout_s=self._publish_timeout_s,
            )

    async def _read_messages(
        self,
        client: aiomqtt.Client,
        link: _Link,
        commands: asyncio.Queue[aiomqtt.Message] | None,
    ) -> None:
        """Handle each acknowledgement as it arrives; queue commands for their worker.

        Commands are carried out one at a time and one may take minutes: an
        acknowledgement must not wait behind it, or sent batches would be resent.
        """
        manual_ack = self._on_command is not None
        async for message in client.messages:
            topic = str(message.topic)
            if topic == self._ack_topic:
                payload = message.payload
                self._handle_ack(bytes(payload) if isinstance(payload, bytes | bytearray) else b"")
                if manual_ack:
                    link.ack(message)
            elif commands is not None:
                commands.put_nowait(message)
            else:
                log.debug("ignoring a message on %s", topic)

    def _handle_ack(self, payload: bytes) -> None:
        """Delete what the cloud acknowledged; never raises for the payload's content."""
        try:
            ack = decode(payload, BatchAck, topic=self._ack_topic)
        except WireError as exc:
            self.unreadable_acks += 1
            if isinstance(exc, SchemaVersionMismatch):
                self.ack_version_mismatches += 1
            if not self._ack_unreadable:
                log.error(
                    "cannot read the cloud's acknowledgement on %s: %s; its batches stay in "
                    "the spool and are resent (logged once until one can be read)",
                    self._ack_topic,
                    exc,
                )
            self._ack_unreadable = True
            return
        if self._ack_unreadable:
            log.info("the cloud's acknowledgements can be read again")
            self._ack_unreadable = False
        epoch = self._spool.spool_epoch
        settled = []
        refused = {}
        for acked in ack.batches:
            if acked.spool_epoch != epoch:
                log.debug(
                    "acknowledgement of batch %d of spool epoch %s, not this spool's %s: ignored",
                    acked.batch_seq,
                    acked.spool_epoch,
                    epoch,
                )
            elif acked.outcome is AckOutcome.REFUSED:
                refused[acked.batch_seq] = acked.reason
            else:
                settled.append(acked.batch_seq)
        self.acknowledged_batches += len(self._spool.acknowledge(epoch, settled))
        if not refused:
            return
        for batch_seq in self._spool.acknowledge(epoch, refused):
            self.refused_batches += 1
            log.error(
                "the cloud refused batch %d of spool %s: %s; it is deleted, not resent",
                batch_seq,
                epoch,
                refused[batch_seq] or "no reason given",
            )

    async def _serve_commands(
        self, client: aiomqtt.Client, link: _Link, queue: asyncio.Queue[aiomqtt.Message]
    ) -> None:
        """Subscribe to this gateway's commands and answer each, one after another.

        One at a time on purpose: an unlock followed by a relock must not swap places.
        """
        topic = topic_for(self._spool.community, self._spool.gateway, Channel.COMMAND, "+")
        refusal = await _subscribe(client, topic, self._publish_timeout_s)
        if refusal is not None:
            raise UplinkError(f"broker refused the subscription to {topic}: {refusal}")
        while True:
            await self._handle_command(link, await queue.get())

    async def _handle_command(self, link: _Link, message: aiomqtt.Message) -> None:
        assert self._on_command is not None
        topic = str(message.topic)
        command_id = topic.rsplit("/", 1)[-1]
        payload = message.payload if isinstance(message.payload, bytes | bytearray) else b""
        result = None
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for returns a result that
            # lands together with a cancellation and drops the cancellation (CPython
            # gh-86296); a test saw an agent whose command task then never stopped.
            async with asyncio.timeout(self._command_timeout_s):
                result = await self._on_command(command_id, bytes(payload))
        except TimeoutError:
            self.command_failures += 1
            log.error(
                "command %s from %s: no result from its handler within %g s",
                command_id,
                topic,
                self._command_timeout_s,
            )
            result = self._command_error(
                command_id,
                f"the gateway's command handler gave no result within "
                f"{self._command_timeout_s:g} s; the outcome is unknown (the same id sent "
                "again gets the gateway's recorded result)",
            )
        except Exception as exc:
            # The hook is the command executor's code: its failure is that command's,
            # never the uplink's; the cloud still gets an answer.
            self.command_failures += 1
            log.exception("command %s from %s failed in its handler", command_id, topic)
            result = self._command_error(
                command_id,
                f"the gateway's command handler failed: {type(exc).__name__}: {exc}",
            )
        if result is not None:
            await link.publish(
                topic_for(
                    self._spool.community,
                    self._spool.gateway,
                    Channel.COMMAND_RESULT,
                    command_id,
                ),
                result,
                timeout_s=self._publish_timeout_s,
            )
        link.ack(message)
        self.commands_handled += 1

    def _command_error(self, command_id: str, detail: str) -> bytes:
        """An error result for a command whose hook gave none."""
        return encode(
            CommandResult(
                id=command_id,
                gateway=self._spool.gateway,
                ok=False,
                detail=detail,
                finished_at=datetime.now(UTC),
            )
        )


async def _subscribe(client: aiomqtt.Client, topic: str, timeout_s: float) -> str | None:
    """Subscribe at QoS 1; the broker's refusal as text, or None when granted."""
    granted = await client.subscribe(topic, qos=1, timeout=timeout_s)
    for code in granted:
        if isinstance(code, ReasonCode) and code.is_failure:
            return str(code)
        if isinstance(code, int) and code >= 0x80:  # MQTT 3.1.1's SUBACK failure
            return f"0x{code:02x}"
    return None


def _credentials_refused(exc: Exception) -> bool:
    """Whether the broker refused who we are (CONNACK or PUBACK), not something else."""
    if isinstance(exc, PublishRefused):
        return exc.code == _NOT_AUTHORISED
    if isinstance(exc, MqttConnectError):
        code = exc.rc.value if isinstance(exc.rc, ReasonCode) else exc.rc
        return code in _CREDENTIALS_REFUSED or code in (4, 5)
    return False
