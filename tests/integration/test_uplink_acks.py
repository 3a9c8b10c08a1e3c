"""The cloud's acknowledgements at the uplink, through a real Mosquitto.

The test plays the cloud: it receives the gateway's batches and publishes ``BatchAck``
on the gateway's ack topic as ingest does after its commit, or withholds it. A batch
not acknowledged goes again after the ack timeout, byte for byte; a refused one is
deleted, counted and logged once, never resent; an acknowledgement of another spool
epoch deletes nothing; one the uplink cannot read (another wire version above all) is
counted and logged and never ends the connection; and none waits behind a command.
"""

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

import aiomqtt
import pytest

from edge.uplink import Uplink, UplinkState
from schemas import SCHEMA_VERSION
from schemas.broker import parse_broker_url
from schemas.topics import Channel, topic_for
from schemas.wire import AckOutcome
from tests.integration.test_uplink import (
    COMMUNITY,
    ScriptedBroker,
    ack_for,
    alarm,
    make_spool,
    readings,
    running,
    subscriber,
    wait_until,
)

FAST = {"ack_timeout_s": 0.5, "ack_timeout_cap_s": 0.5}


def cloud_client(url: str, client_id: str) -> aiomqtt.Client:
    broker = parse_broker_url(url)
    return aiomqtt.Client(
        broker.host, broker.port, identifier=client_id, protocol=aiomqtt.ProtocolVersion.V5
    )


async def test_a_batch_never_acknowledged_goes_again_byte_for_byte_until_it_is(
    tmp_path: Path, mqtt_url: str, unique_id: Callable[[str], str]
) -> None:
    gateway = unique_id("gw")
    spool = make_spool(tmp_path / "spool.db", gateway, max_batch_items=100, **FAST)
    spool.add_readings(readings("sd-1", 1, 300))
    spool.add_events([alarm("sd-1", 301)])

    def lose_the_first_two(batch_seq: int, before: int) -> AckOutcome | None:
        """The cloud committed each time, but its first two acknowledgements got lost."""
        return AckOutcome.DUPLICATE if before >= 2 else None

    topic = f"anju/v1/{COMMUNITY}/{gateway}/+"
    async with subscriber(
        mqtt_url, topic, unique_id("cloud"), outcome=lose_the_first_two
    ) as received:
        uplink = Uplink(parse_broker_url(mqtt_url), spool, agent_version="test")
        async with running(uplink):
            await wait_until(lambda: spool.empty, 15, "every batch acknowledged")
    assert sorted(received.batches) == [0, 1, 2, 3]
    # Each batch three times, with the same bytes (Received checks them).
    assert received.repeats == 8
    assert uplink.resent_batches == 8
    assert uplink.published_batches == 12
    assert uplink.acknowledged_batches == 4
    assert uplink.connection_failures == 0


async def test_a_refused_batch_is_deleted_counted_logged_once_and_never_resent(
    tmp_path: Path,
    mqtt_url: str,
    unique_id: Callable[[str], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    gateway = unique_id("gw")
    spool = make_spool(tmp_path / "spool.db", gateway, **FAST)
    spool.add_events([alarm("sd-1", 1)])
    spool.add_events([alarm("sd-1", 2)])
    reason = "quarantined: Expected `str` of length <= 1024 - at `$.items[0].data.reason`"

    def refuse_the_first(batch_seq: int, before: int) -> AckOutcome:
        return AckOutcome.REFUSED if batch_seq == 0 else AckOutcome.STORED

    topic = f"anju/v1/{COMMUNITY}/{gateway}/events"
    caplog.set_level(logging.ERROR, logger="edge.uplink")
    async with (
        subscriber(
            mqtt_url, topic, unique_id("cloud"), outcome=refuse_the_first, reason=reason
        ) as received,
        cloud_client(mqtt_url, unique_id("cloud-again")) as cloud,
    ):
        uplink = Uplink(parse_broker_url(mqtt_url), spool, agent_version="test")
        async with running(uplink):
            await wait_until(lambda: spool.empty, 10, "both batches settled")
            # The cloud acknowledges the refusal again (say, after a resend it refused
            # too): nothing is left to delete, nothing is logged again.
            await cloud.publish(
                topic_for(COMMUNITY, gateway, Channel.ACK),
                ack_for(gateway, spool.spool_epoch, {0: AckOutcome.REFUSED}, reason),
                qos=1,
            )
            await asyncio.sleep(1.5)  # three ack timeouts: nothing goes again
    assert [received.times(0), received.times(1)] == [1, 1]
    assert (uplink.refused_batches, uplink.acknowledged_batches) == (1, 1)
    assert uplink.resent_batches == 0
    refusals = [r.getMessage() for r in caplog.records if "refused batch" in r.getMessage()]
    assert refusals == [
        f"the cloud refused batch 0 of spool {spool.spool_epoch}: {reason}; "
        "it is deleted, not resent"
    ]


async def test_acknowledgements_of_another_epoch_or_version_delete_nothing_and_keep_the_link(
    tmp_path: Path,
    mqtt_url: str,
    unique_id: Callable[[str], str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    gateway = unique_id("gw")
    spool = make_spool(tmp_path / "spool.db", gateway)
    spool.add_events([alarm("sd-1", 1)])
    epoch = spool.spool_epoch
    ack_topic = topic_for(COMMUNITY, gateway, Channel.ACK)
    current = ack_for(gateway, epoch, {0: AckOutcome.STORED})
    old_version = current.replace(
        f'"schema_version":{SCHEMA_VERSION},'.encode(), b'"schema_version":1,'
    )
    assert old_version != current
    caplog.set_level(logging.DEBUG, logger="edge.uplink")
    topic = f"anju/v1/{COMMUNITY}/{gateway}/events"
    async with (
        subscriber(mqtt_url, topic, unique_id("sub"), outcome=lambda seq, before: None),
        cloud_client(mqtt_url, unique_id("cloud")) as cloud,
    ):
        uplink = Uplink(parse_broker_url(mqtt_url), spool, agent_version="test")
        async with running(uplink):
            await wait_until(lambda: spool.sent_unacked[Channel.EVENTS] == 1, 10, "sent")
            for payload in (
                ack_for(gateway, "0" * 16, {0: AckOutcome.STORED}),
                old_version,
                old_version,
                b"not json",
            ):
                await cloud.publish(ack_topic, payload, qos=1)
            await wait_until(lambda: uplink.unreadable_acks == 3, 10, "three unreadable")
            assert spool.depth[Channel.EVENTS] == 1, "nothing deleted"
            assert uplink.ack_version_mismatches == 2
            assert (uplink.state, uplink.connection_failures) == (UplinkState.ONLINE, 0)
            await cloud.publish(ack_topic, current, qos=1)
            await wait_until(lambda: spool.empty, 10, "the readable acknowledgement")
    messages = [record.getMessage() for record in caplog.records]
    assert any(f"spool epoch {'0' * 16}, not this spool's {epoch}" in m for m in messages)
    unreadable = [m for m in messages if m.startswith("cannot read the cloud's")]
    assert len(unreadable) == 1, "logged once until a readable one comes"
    assert (
        f"schema_version 1, this side reads {SCHEMA_VERSION}: upgrade the gateway agent or "
        "the cloud so both speak one version" in unreadable[0]
    )
    assert "the cloud's acknowledgements can be read again" in messages


async def test_an_acknowledgement_does_not_wait_behind_a_running_command(
    tmp_path: Path, mqtt_url: str, unique_id: Callable[[str], str]
) -> None:
    gateway = unique_id("gw")
    spool = make_spool(tmp_path / "spool.db", gateway)
    started, release = asyncio.Event(), asyncio.Event()

    async def slow_command(command_id: str, payload: bytes) -> bytes | None:
        started.set()
        await release.wait()
        return None

    uplink = Uplink(
        parse_broker_url(mqtt_url), spool, agent_version="test", on_command=slow_command
    )
    topic = f"anju/v1/{COMMUNITY}/{gateway}/events"
    async with (
        subscriber(mqtt_url, topic, unique_id("sub")),
        cloud_client(mqtt_url, unique_id("cloud")) as cloud,
        running(uplink),
    ):
        await wait_until(lambda: uplink.state is UplinkState.ONLINE, 10, "online")
        await asyncio.sleep(0.3)
        command = topic_for(COMMUNITY, gateway, Channel.COMMAND, "c-slow")
        await cloud.publish(command, b"{}", qos=1)
        await asyncio.wait_for(started.wait(), timeout=10)
        spool.add_events([alarm("sd-1", 1)])
        await wait_until(lambda: spool.empty, 5, "acknowledged while the command runs")
        assert not release.is_set()
        release.set()
        await wait_until(lambda: uplink.commands_handled == 1, 5, "the command finished")


async def test_a_refused_ack_subscription_is_logged_and_batches_still_go_out(
    tmp_path: Path, unique_id: Callable[[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    """A broker role without the ack topic: alarms must still reach the cloud."""
    gateway = unique_id("gw")
    spool = make_spool(tmp_path / "spool.db", gateway)
    spool.add_events([alarm("sd-1", 1)])
    scripted = ScriptedBroker(subscribe_reason=0x87)
    async with scripted as address:
        uplink = Uplink(address, spool, agent_version="test")
        async with running(uplink):
            await wait_until(lambda: len(scripted.held) == 1, 10, "the alarm published")
            await scripted.ack(1)
            await wait_until(lambda: spool.sent_unacked[Channel.EVENTS] == 1, 5, "sent")
            assert (uplink.state, uplink.connection_failures) == (UplinkState.ONLINE, 0)
            spool.acknowledge(spool.spool_epoch, [0])  # lets the test stop at once
    ack_topic = topic_for(COMMUNITY, gateway, Channel.ACK)
    assert f"broker refused the subscription to {ack_topic} (Not authorized)" in caplog.text
