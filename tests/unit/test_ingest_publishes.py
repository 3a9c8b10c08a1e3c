"""Ingest's PUBLISH reader against paho-mqtt's own decoder, on packets built byte by byte
as MQTT 3.1.1 and 5 lay them out (properties packed by paho's encoder)."""

from __future__ import annotations

import pytest
from paho.mqtt._packet import decode_publish
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cloud.ingest.publishes import MalformedPublish, parse_publish

TOPIC = "anju/v1/xijin/fenghuang/gw-1/telemetry"
PAYLOAD = b'{"v":1,"items":[]}'


def properties(*, long: bool = False) -> bytes:
    """A PUBLISH's packed properties (length first); ``long`` makes that length take
    two bytes."""
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.MessageExpiryInterval = 600
    props.ContentType = "application/json"
    props.PayloadFormatIndicator = 1
    props.UserProperty = [("site", "x" * (300 if long else 3)), ("batch", "1")]
    return bytes(props.pack())  # type: ignore[no-untyped-call]


def packet(
    *, qos: int = 1, mid: int = 4242, topic: bytes = TOPIC.encode(), props: bytes | None = b"\0"
) -> bytes:
    """Everything after a PUBLISH's remaining length; ``props`` None for MQTT 3.1.1."""
    parts = [len(topic).to_bytes(2, "big"), topic]
    if qos:
        parts.append(mid.to_bytes(2, "big"))
    if props is not None:
        parts.append(props)
    return b"".join(parts) + PAYLOAD


def header(qos: int, *, dup: bool = False) -> int:
    return 0x30 | qos << 1 | (0x08 if dup else 0)


@pytest.mark.parametrize(
    ("qos", "props"),
    [(1, b"\0"), (0, b"\0"), (1, properties()), (1, properties(long=True)), (1, None), (0, None)],
    ids=["v5-qos1", "v5-qos0", "v5-properties", "v5-long-properties", "v3-qos1", "v3-qos0"],
)
def test_reads_what_paho_reads(qos: int, props: bytes | None) -> None:
    data = packet(qos=qos, props=props)
    v5 = props is not None
    version = MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311
    theirs = decode_publish(header(qos, dup=True), data, version)

    ours = parse_publish(header(qos, dup=True), bytearray(data), v5=v5, received=12.5)

    assert (ours.topic, ours.payload, ours.qos, ours.mid) == (
        theirs.topic.decode(),
        theirs.payload,
        theirs.qos,
        theirs.mid,
    )
    assert (ours.payload, ours.mid, ours.received) == (PAYLOAD, 4242 if qos else 0, 12.5)
    assert type(ours.payload) is bytes


def test_a_topic_of_bad_utf8_is_kept_for_the_topic_check_to_quarantine() -> None:
    ours = parse_publish(header(1), packet(topic=b"anju/v1/\xff"), v5=True, received=0.0)
    assert ours.topic == "anju/v1/\ufffd"
    assert ours.payload == PAYLOAD


@pytest.mark.parametrize(
    ("first", "data", "reason"),
    [
        (header(1), b"\0", "no topic length"),
        (header(1), b"\0\xffanju", "topic longer than the packet"),
        (header(1), len(TOPIC).to_bytes(2, "big") + TOPIC.encode() + b"\1", "no packet identifier"),
        (header(1), packet(props=b"\x80\x80\x80\x80\x01"), "bad properties length"),
        (header(1), packet()[: -len(PAYLOAD) - 1] + b"\x80", "bad properties length"),
        (header(0), packet(qos=0, props=b"\x7f"), "properties longer than the packet"),
        (header(2), packet(), "QoS 2 on a QoS 1 subscription"),
        (header(3), packet(), "QoS 3 on a QoS 1 subscription"),
        (header(1), packet(topic=b"", props=b"\x03\x23\x00\x01"), "empty topic"),
    ],
    ids=[
        "one-byte",
        "topic-past-end",
        "no-mid",
        "five-byte-length",
        "cut-length",
        "properties-past-end",
        "qos2",
        "qos3",
        "topic-alias",
    ],
)
def test_malformed_packets_are_refused_with_the_reason(
    first: int, data: bytes, reason: str
) -> None:
    with pytest.raises(MalformedPublish, match=reason) as caught:
        parse_publish(first, data, v5=True, received=0.0)
    assert caught.value.packet == data
    assert data[:32].hex() in str(caught.value)
