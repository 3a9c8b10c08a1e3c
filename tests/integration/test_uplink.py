"""The uplink against a real Mosquitto, and against a scripted broker for PUBACK timing.

Mosquitto shows that batches arrive at QoS 1, survive a broker restart mid-drain, that
commands make the round trip and that the Last Will marks a killed gateway offline.
The test's subscriber plays the cloud: it acknowledges each batch it receives
(``BatchAck`` on the gateway's ack topic), and only that deletes a batch from the spool
(acknowledgements lost, refused, of another epoch or version: test_uplink_acks.py).
The scripted broker (a few lines of MQTT v5 over a socket) decides when, and with which
reason code, each PUBACK goes back, which Mosquitto cannot be made to do: it shows the
in-flight bound and that a batch is marked sent only after its own successful PUBACK.
"""

import asyncio
import contextlib
import os
import signal
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiomqtt
import pytest

from anju.services.mosquitto import MosquittoServer
from anju.services.python_broker import PythonBroker
from edge.backoff import Backoff
from edge.spool import Spool
from edge.uplink import Uplink, UplinkState
from schemas.broker import BrokerAddress, parse_broker_url
from schemas.topics import Channel, parse_topic, topic_for
from schemas.vocabulary import EventType, Metric, Severity
from schemas.wire import (
    AckedBatch,
    AckOutcome,
    BatchAck,
    CommandResult,
    Event,
    EventBatch,
    GatewayState,
    Reading,
    Status,
    TelemetryBatch,
    decode,
    encode,
)

COMMUNITY = "test/uplink"
NOW = datetime(2026, 11, 28, tzinfo=UTC)
ROOT = Path(__file__).resolve().parents[2]


def readings(device: str, first: int, count: int) -> list[Reading]:
    return [
        Reading(
            device=device,
            ts=NOW + timedelta(seconds=seq),
            seq=seq,
            metric=Metric.TEMPERATURE,
            value=20.0,
        )
        for seq in range(first, first + count)
    ]


def alarm(device: str, seq: int) -> Event:
    return Event(
        device=device, ts=NOW, seq=seq, type=EventType.SMOKE_ALARM, severity=Severity.CRITICAL
    )


def make_spool(path: Path, gateway: str, **options: object) -> Spool:
    return Spool(path, gateway, COMMUNITY, budget_bytes=2**30, **options)  # type: ignore[arg-type]


Outcome = Callable[[int, int], AckOutcome | None]
"""What the test's cloud answers for (batch_seq, times received before): None for no
acknowledgement at all (one lost, or a cloud that has not committed)."""


def stored_then_duplicate(batch_seq: int, before: int) -> AckOutcome:
    return AckOutcome.DUPLICATE if before else AckOutcome.STORED


def ack_for(gateway: str, epoch: str, batches: dict[int, AckOutcome], reason: str = "") -> bytes:
    """A BatchAck as the cloud publishes it."""
    return encode(
        BatchAck(
            gateway=gateway,
            batches=[
                AckedBatch(
                    spool_epoch=epoch,
                    batch_seq=seq,
                    outcome=outcome,
                    reason=reason if outcome is AckOutcome.REFUSED else "",
                )
                for seq, outcome in batches.items()
            ],
            acked_at=datetime.now(UTC),
        )
    )


@dataclass
class Received:
    messages: list[tuple[str, bytes]] = field(default_factory=list)
    batches: dict[int, bytes] = field(default_factory=dict)
    repeats: int = 0

    def add(self, topic: str, payload: bytes) -> EventBatch | TelemetryBatch | None:
        """Record a message; the batch it carries, if any."""
        self.messages.append((topic, payload))
        if not topic.endswith(("/telemetry", "/events")):
            return None
        batch: EventBatch | TelemetryBatch = (
            decode(payload, TelemetryBatch)
            if topic.endswith("/telemetry")
            else decode(payload, EventBatch)
        )
        seq = batch.batch_seq
        if seq in self.batches:
            assert self.batches[seq] == payload, f"batch {seq} came back with other bytes"
            self.repeats += 1
        self.batches[seq] = payload
        return batch

    def times(self, batch_seq: int) -> int:
        """How often the batch arrived."""
        return sum(
            1
            for topic, payload in self.messages
            if topic.endswith(("/telemetry", "/events")) and self.batches.get(batch_seq) == payload
        )

    def items(self) -> set[tuple[str, int]]:
        found: set[tuple[str, int]] = set()
        for topic, payload in self.messages:
            if topic.endswith("/telemetry"):
                found.update((r.device, r.seq) for r in decode(payload, TelemetryBatch).items)
            elif topic.endswith("/events"):
                found.update((e.device, e.seq) for e in decode(payload, EventBatch).items)
        return found


@contextlib.asynccontextmanager
async def subscriber(
    url: str,
    topic: str,
    client_id: str,
    *,
    outcome: Outcome = stored_then_duplicate,
    reason: str = "",
) -> AsyncIterator[Received]:
    """Collect every message on ``topic``, reconnecting at once if the broker goes away,
    and acknowledge each batch as the cloud would, after ``outcome``."""
    broker = parse_broker_url(url)
    received = Received()
    subscribed = asyncio.Event()

    async def listen() -> None:
        while True:
            try:
                async with aiomqtt.Client(
                    broker.host,
                    broker.port,
                    identifier=client_id,
                    protocol=aiomqtt.ProtocolVersion.V5,
                ) as client:
                    await client.subscribe(topic, qos=1)
                    subscribed.set()
                    async for message in client.messages:
                        assert isinstance(message.payload, bytes)
                        batch = received.add(str(message.topic), message.payload)
                        if batch is None:
                            continue
                        answer = outcome(batch.batch_seq, received.times(batch.batch_seq) - 1)
                        if answer is not None:
                            address = parse_topic(str(message.topic))
                            await client.publish(
                                topic_for(address.community, address.gateway, Channel.ACK),
                                ack_for(
                                    batch.gateway,
                                    batch.spool_epoch,
                                    {batch.batch_seq: answer},
                                    reason,
                                ),
                                qos=1,
                            )
            except aiomqtt.MqttError:
                await asyncio.sleep(0.05)

    task = asyncio.create_task(listen(), name="test-subscriber")
    await asyncio.wait_for(subscribed.wait(), timeout=10)
    try:
        yield received
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_until(condition: Callable[[], bool], within_s: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + within_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting: {what}"
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def running(uplink: Uplink) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(uplink.run(stop, drain_timeout_s=5), name="uplink")
    try:
        yield stop
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=30)


async def test_batches_arrive_at_qos1_events_first_and_leave_the_spool_when_acknowledged(
    tmp_path: Path, mqtt_url: str, unique_id: Callable[[str], str]
) -> None:
    gateway = unique_id("gw")
    spool = make_spool(tmp_path / "spool.db", gateway, max_batch_items=100)
    spool.add_readings(readings("sd-1", 1, 1_000))
    spool.add_events([alarm("sd-1", 1_001)])
    expected = {("sd-1", seq) for seq in range(1, 1_002)}
    topic = f"anju/v1/{COMMUNITY}/{gateway}/+"
    async with subscriber(mqtt_url, topic, unique_id("sub")) as received:
        uplink = Uplink(parse_broker_url(mqtt_url), spool, agent_version="test")
        async with running(uplink):
            await wait_until(lambda: received.items() >= expected, 10, "every item arrives")
            await wait_until(lambda: spool.empty, 5, "the spool empties")
        batch_topics = [t for t, _ in received.messages if not t.endswith("/status")]
        assert batch_topics[0].endswith("/events")
        assert uplink.published_batches == 11
        assert uplink.published_items == 1_001
        assert uplink.acknowledged_batches == 11
        assert (uplink.resent_batches, uplink.refused_batches, received.repeats) == (0, 0, 0)
        assert 1 < uplink.max_in_flight_seen <= 8
        assert uplink.state is UplinkState.STOPPED

        def states() -> list[GatewayState]:
            return [decode(p, Status).state for t, p in received.messages if t.endswith("/status")]

        # The goodbye is published as the uplink stops; it reaches the subscriber after.
        await wait_until(lambda: GatewayState.OFFLINE in states(), 5, "the offline status")
        assert states() == [GatewayState.ONLINE, GatewayState.OFFLINE]


async def test_broker_restart_mid_drain_loses_nothing(
    tmp_path: Path, mosquitto: MosquittoServer, unique_id: Callable[[str], str]
) -> None:
    gateway = unique_id("gw")
    # Acknowledgements the restart loses come back after a resend: keep its wait short.
    spool = make_spool(
        tmp_path / "spool.db", gateway, max_batch_items=200, ack_timeout_s=1, ack_timeout_cap_s=1
    )
    for device in range(20):
        spool.add_readings(readings(f"sd-{device}", 1, 2_000))
    expected = {(f"sd-{device}", seq) for device in range(20) for seq in range(1, 2_001)}
    topic = topic_for(COMMUNITY, gateway, Channel.TELEMETRY)
    async with subscriber(mosquitto.url, topic, unique_id("sub")) as received:
        # The subscriber retries every 50 ms, the uplink after 1-2 s: it is back first.
        uplink = Uplink(
            parse_broker_url(mosquitto.url),
            spool,
            agent_version="test",
            backoff=Backoff(initial_s=2.0, cap_s=2.0),
        )
        try:
            async with running(uplink):
                await wait_until(lambda: len(received.batches) >= 20, 10, "a first part arrives")
                mosquitto.stop()
                left = spool.depth[Channel.TELEMETRY] - spool.sent_unacked[Channel.TELEMETRY]
                assert 0 < left < 200
                await asyncio.sleep(0.5)
                mosquitto.start()
                await wait_until(lambda: received.items() >= expected, 30, "every reading arrives")
                await wait_until(lambda: spool.empty, 5, "the spool empties")
        finally:
            mosquitto.start()
    assert uplink.connection_failures >= 1
    assert received.items() == expected
    assert sorted(received.batches) == list(range(200))


async def test_commands_round_trip_including_while_offline_and_failing(
    tmp_path: Path, mqtt_url: str, unique_id: Callable[[str], str]
) -> None:
    gateway = unique_id("gw")
    spool = make_spool(tmp_path / "spool.db", gateway)
    calls: list[tuple[str, bytes]] = []

    async def on_command(command_id: str, payload: bytes) -> bytes | None:
        calls.append((command_id, payload))
        if payload == b"boom":
            raise RuntimeError("handler fault")
        return b"done:" + payload

    def make_uplink() -> Uplink:
        return Uplink(
            parse_broker_url(mqtt_url), spool, agent_version="test", on_command=on_command
        )

    results = f"anju/v1/{COMMUNITY}/{gateway}/cmd-result/+"
    broker = parse_broker_url(mqtt_url)
    async with (
        subscriber(mqtt_url, results, unique_id("sub")) as received,
        aiomqtt.Client(
            broker.host,
            broker.port,
            identifier=unique_id("cloud"),
            protocol=aiomqtt.ProtocolVersion.V5,
        ) as cloud,
    ):

        def command(command_id: str) -> str:
            return topic_for(COMMUNITY, gateway, Channel.COMMAND, command_id)

        first = make_uplink()
        async with running(first):
            await wait_until(lambda: first.state is UplinkState.ONLINE, 10, "online")
            await asyncio.sleep(0.3)
            await cloud.publish(command("c-1"), b"ping", qos=1)
            await cloud.publish(command("c-2"), b"boom", qos=1)
            await cloud.publish(command("c-3"), b"after", qos=1)
            await wait_until(lambda: len(received.messages) >= 3, 10, "three results")
            await wait_until(lambda: first.commands_handled == 3, 10, "three commands handled")
        assert first.command_failures == 1
        assert first.commands_handled == 3
        # Sent while the gateway is away: the persistent session keeps it.
        await cloud.publish(command("c-4"), b"queued", qos=1)
        second = make_uplink()
        async with running(second):
            await wait_until(lambda: len(received.messages) >= 4, 10, "the queued command")
    assert [c for c, _ in calls] == ["c-1", "c-2", "c-3", "c-4"]
    failed = [p for t, p in received.messages if t == results.replace("+", "c-2")]
    assert len(failed) == 1
    assert decode(failed[0], CommandResult).ok is False
    assert sorted(m for m in received.messages if m[0] != results.replace("+", "c-2")) == [
        (results.replace("+", "c-1"), b"done:ping"),
        (results.replace("+", "c-3"), b"done:after"),
        (results.replace("+", "c-4"), b"done:queued"),
    ]


async def test_a_failing_or_hanging_command_hook_still_gets_an_error_result_out(
    tmp_path: Path, mqtt_url: str, unique_id: Callable[[str], str]
) -> None:
    gateway = unique_id("gw")
    spool = make_spool(tmp_path / "spool.db", gateway)
    hanging: list[str] = []

    async def on_command(command_id: str, payload: bytes) -> bytes | None:
        if payload == b"hang":
            hanging.append(command_id)
            await asyncio.sleep(30)
        raise RuntimeError("handler fault")

    uplink = Uplink(
        parse_broker_url(mqtt_url),
        spool,
        agent_version="test",
        on_command=on_command,
        command_timeout_s=0.3,
    )
    results = f"anju/v1/{COMMUNITY}/{gateway}/cmd-result/+"
    broker = parse_broker_url(mqtt_url)
    async with (
        subscriber(mqtt_url, results, unique_id("sub")) as received,
        aiomqtt.Client(
            broker.host,
            broker.port,
            identifier=unique_id("cloud"),
            protocol=aiomqtt.ProtocolVersion.V5,
        ) as cloud,
        running(uplink),
    ):
        await wait_until(lambda: uplink.state is UplinkState.ONLINE, 10, "online")
        await asyncio.sleep(0.3)
        for command_id, payload in [("c-boom", b"boom"), ("c-hang", b"hang")]:
            topic = topic_for(COMMUNITY, gateway, Channel.COMMAND, command_id)
            await cloud.publish(topic, payload, qos=1)
        await wait_until(lambda: len(received.messages) >= 2, 10, "two error results")
        # The subscriber can hold a result before the uplink has its PUBACK and counts
        # the command as handled.
        await wait_until(lambda: uplink.commands_handled == 2, 10, "both commands handled")
    answers = {t.rsplit("/", 1)[-1]: decode(p, CommandResult) for t, p in received.messages}
    assert sorted(answers) == ["c-boom", "c-hang"]
    boom, hang = answers["c-boom"], answers["c-hang"]
    assert (boom.id, boom.gateway, boom.ok) == ("c-boom", gateway, False)
    assert boom.detail == "the gateway's command handler failed: RuntimeError: handler fault"
    assert (hang.id, hang.gateway, hang.ok) == ("c-hang", gateway, False)
    assert hang.detail.startswith("the gateway's command handler gave no result within 0.3 s")
    assert (uplink.command_failures, uplink.commands_handled, hanging) == (2, 2, ["c-hang"])


_GATEWAY_PROCESS = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from edge.spool import Spool
    from edge.uplink import Uplink
    from schemas.broker import parse_broker_url

    async def main() -> None:
        spool = Spool(Path(sys.argv[3]), sys.argv[2], "test/uplink", budget_bytes=2**30)
        await Uplink(parse_broker_url(sys.argv[1]), spool, agent_version="test").run(
            asyncio.Event()
        )

    asyncio.run(main())
    """
)


async def test_last_will_marks_a_killed_gateway_offline_retained(
    tmp_path: Path, mqtt_url: str, unique_id: Callable[[str], str]
) -> None:
    gateway = unique_id("gw")
    status = topic_for(COMMUNITY, gateway, Channel.STATUS)
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _GATEWAY_PROCESS,
        mqtt_url,
        gateway,
        str(tmp_path / "s.db"),
        cwd=ROOT,
    )
    try:
        async with subscriber(mqtt_url, status, unique_id("sub")) as live:
            await wait_until(lambda: bool(live.messages), 15, "the online status")
            assert decode(live.messages[-1][1], Status).state is GatewayState.ONLINE
            os.kill(child.pid, signal.SIGKILL)
            await wait_until(lambda: len(live.messages) >= 2, 10, "the Last Will")
    finally:
        if child.returncode is None:
            child.kill()
        await asyncio.wait_for(child.wait(), timeout=10)
    async with subscriber(mqtt_url, status, unique_id("late")) as late:
        await wait_until(lambda: bool(late.messages), 5, "the retained status")
    assert decode(late.messages[0][1], Status).state is GatewayState.OFFLINE


class ScriptedBroker:
    """An MQTT v5 peer that acknowledges publishes only when the test says so.

    It accepts one connection at a time, answers CONNECT, PINGREQ and SUBSCRIBE (granted
    at QoS 1 unless told otherwise), acknowledges the status topic at once and holds
    every other PUBLISH until ``ack`` releases it with the reason code given.
    ``deliver`` sends the client a message (QoS 0), as the cloud's acknowledgement
    would come.
    """

    def __init__(self, *, subscribe_reason: int = 1) -> None:
        self.subscribe_reason = subscribe_reason
        """The SUBACK's reason code: 1 grants QoS 1, 0x87 refuses (not authorised)."""
        self.held: list[tuple[int, str]] = []
        self.connections = 0
        self._writer: asyncio.StreamWriter | None = None
        self._server: asyncio.Server | None = None
        self.arrived = asyncio.Event()

    async def __aenter__(self) -> BrokerAddress:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return BrokerAddress("127.0.0.1", port)

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        if self._writer is not None:
            self._writer.close()

    async def ack(self, count: int, reason: int = 0) -> None:
        assert self._writer is not None
        for _ in range(count):
            packet_id, _ = self.held.pop(0)
            self._writer.write(bytes([0x40, 3]) + packet_id.to_bytes(2, "big") + bytes([reason]))
        await self._writer.drain()

    async def deliver(self, topic: str, payload: bytes) -> None:
        assert self._writer is not None
        name = topic.encode()
        body = len(name).to_bytes(2, "big") + name + b"\x00" + payload  # no properties
        length, size = b"", len(body)
        while True:
            size, digit = divmod(size, 128)
            length += bytes([digit | (0x80 if size else 0)])
            if not size:
                break
        self._writer.write(b"\x30" + length + body)
        await self._writer.drain()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.held.clear()
        self._writer = writer
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                first = (await reader.readexactly(1))[0]
                length, shift = 0, 0
                while True:
                    byte = (await reader.readexactly(1))[0]
                    length |= (byte & 0x7F) << shift
                    shift += 7
                    if not byte & 0x80:
                        break
                body = await reader.readexactly(length)
                kind = first >> 4
                if kind == 1:  # CONNECT
                    writer.write(bytes([0x20, 3, 0, 0, 0]))
                elif kind == 12:  # PINGREQ
                    writer.write(bytes([0xD0, 0]))
                elif kind == 8:  # SUBSCRIBE of one filter
                    writer.write(bytes([0x90, 4]) + body[:2] + bytes([0, self.subscribe_reason]))
                elif kind == 3:  # PUBLISH, QoS 1
                    size = int.from_bytes(body[:2], "big")
                    topic = body[2 : 2 + size].decode()
                    packet_id = int.from_bytes(body[2 + size : 4 + size], "big")
                    if topic.endswith("/status"):
                        writer.write(bytes([0x40, 2]) + packet_id.to_bytes(2, "big"))
                    else:
                        self.held.append((packet_id, topic))
                        self.arrived.set()
                elif kind == 14:  # DISCONNECT
                    break
                await writer.drain()
        writer.close()


async def test_in_flight_is_bounded_and_only_a_successful_puback_marks_a_batch_sent(
    tmp_path: Path, unique_id: Callable[[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    gateway = unique_id("gw")
    spool = make_spool(tmp_path / "spool.db", gateway)
    for seq in range(1, 11):
        spool.add_events([alarm("sd-1", seq)])
    scripted = ScriptedBroker()
    async with scripted as address:
        uplink = Uplink(
            address,
            spool,
            agent_version="test",
            max_in_flight=3,
            backoff=Backoff(initial_s=0.2, cap_s=0.2),
        )
        async with running(uplink):
            await wait_until(lambda: len(scripted.held) == 3, 10, "three publishes in flight")
            await asyncio.sleep(0.3)
            assert len(scripted.held) == 3, "the bound holds"

            def sent() -> int:
                return spool.sent_unacked[Channel.EVENTS]

            assert sent() == 0, "nothing is sent before its PUBACK"
            await scripted.ack(2)
            await wait_until(lambda: sent() == 2, 5, "two PUBACKed")
            assert spool.depth[Channel.EVENTS] == 10, "a PUBACK deletes nothing"
            await wait_until(lambda: len(scripted.held) == 3, 5, "two more sent")
            await scripted.ack(1, reason=0x87)
            await wait_until(lambda: scripted.connections == 2, 10, "a reconnect")
            assert sent() == 2, "a refused batch stays unsent"
            assert uplink.refused_publishes == 1
            await wait_until(lambda: len(scripted.held) == 3, 10, "sending again")
            while sent() < 10:
                await wait_until(lambda: bool(scripted.held), 5, "a publish")
                await scripted.ack(len(scripted.held))
                await asyncio.sleep(0.05)
            assert uplink.resent_batches == 0, "the sent ones did not go again at the reconnect"
            await scripted.deliver(
                topic_for(COMMUNITY, gateway, Channel.ACK),
                ack_for(gateway, spool.spool_epoch, dict.fromkeys(range(10), AckOutcome.STORED)),
            )
            await wait_until(lambda: spool.empty, 5, "the cloud's acknowledgement")
    assert uplink.acknowledged_batches == 10
    assert "Not authorized" in caplog.text
    assert f"anju/v1/{COMMUNITY}/{gateway}/events" in caplog.text


async def test_uplink_speaks_mqtt_3_1_1_with_commands(tmp_path: Path) -> None:
    """The zero-install demo's in-process broker speaks only 3.1.1; paho then refuses
    any clean-start setting but its default, which once stopped the agent at connect."""
    async with PythonBroker() as broker:
        url = f"{broker.url}?version={broker.protocol_version}"
        address = parse_broker_url(url)
        with Spool(tmp_path / "spool", "gw-1", COMMUNITY, budget_bytes=2**24) as spool:
            spool.add_events([alarm("sd-1", 1)])

            async def pong(command_id: str, payload: bytes) -> bytes:
                return b"{}"

            uplink = Uplink(address, spool, agent_version="test", on_command=pong)
            async with aiomqtt.Client(
                address.host, address.port, protocol=aiomqtt.ProtocolVersion.V311
            ) as cloud:
                await cloud.subscribe(topic_for(COMMUNITY, "gw-1", Channel.EVENTS), qos=1)
                async with running(uplink):
                    async with asyncio.timeout(10):
                        message = await anext(cloud.messages)
                    assert isinstance(message.payload, bytes)
                    batch = decode(message.payload, EventBatch)
                    await cloud.publish(
                        topic_for(COMMUNITY, "gw-1", Channel.ACK),
                        ack_for("gw-1", batch.spool_epoch, {batch.batch_seq: AckOutcome.STORED}),
                        qos=1,
                    )
                    await wait_until(lambda: spool.empty, 10, "the batch acknowledged")
            assert uplink.internal_errors == 0
    assert batch.items[0].seq == 1
