"""The wire contract of docs/design.md section 3: payload encoding, strict decoding, topics."""

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from schemas import SCHEMA_VERSION
from schemas.errors import SchemaVersionMismatch, WireError
from schemas.topics import Channel, TopicAddress, parse_topic, subscription, topic_for
from schemas.vocabulary import EventType, Metric, Severity
from schemas.wire import (
    WIRE_TYPES,
    AckedBatch,
    AckOutcome,
    BatchAck,
    Command,
    CommandName,
    CommandResult,
    Event,
    EventBatch,
    EventData,
    GatewayConfigDocument,
    GatewayState,
    PushedDevice,
    Reading,
    Status,
    TelemetryBatch,
    decode,
    encode,
    read_batch_header,
)

T0 = datetime(2024, 5, 1, 8, 30, 0, 125000, tzinfo=UTC)
HEADER: dict[str, Any] = {
    "gateway": "gw-fenghuang-01",
    "community": "xijin/fenghuang",
    "spool_epoch": "3f9a0c1b7d2e4a65",
    "batch_seq": 41,
    "sent_at": T0,
}


def _telemetry() -> TelemetryBatch:
    return TelemetryBatch(
        **HEADER,
        items=[
            Reading(device="smoke-b3-u1", ts=T0, seq=7, metric=Metric.TEMPERATURE, value=21.5),
            Reading(device="door-b3-main", ts=T0, seq=8, metric=Metric.DOOR_OPEN, value=1.0),
        ],
    )


def _events() -> EventBatch:
    return EventBatch(
        **HEADER,
        items=[
            Event(
                device="door-b3-main",
                ts=T0,
                seq=9,
                type=EventType.ACCESS_DENIED,
                severity=Severity.INFO,
                data=EventData(card_hash="9f3a01c2", door="b3-main"),
            ),
            Event(
                device="smoke-b3-u1",
                ts=T0,
                seq=10,
                type=EventType.SMOKE_ALARM,
                severity=Severity.CRITICAL,
            ),
        ],
    )


SAMPLES: dict[str, msgspec.Struct] = {
    "telemetry_batch": _telemetry(),
    "event_batch": _events(),
    "status": Status(
        gateway="gw-fenghuang-01",
        community="xijin/fenghuang",
        state=GatewayState.ONLINE,
        at=T0,
        agent_version="0.1.0",
    ),
    "command": Command(
        id="cmd-20240501-0001",
        name=CommandName.UNLOCK_DOOR,
        device="door-b3-main",
        args={"seconds": 5, "reason": "resident locked out", "override": True, "ratio": 0.5},
        issued_at=T0,
        expires_at=T0 + timedelta(seconds=30),
    ),
    "command_result": CommandResult(
        id="cmd-20240501-0001",
        gateway="gw-fenghuang-01",
        ok=False,
        detail="device offline",
        data={"attempts": 3},
        finished_at=T0 + timedelta(seconds=2),
    ),
    "gateway_config": GatewayConfigDocument(
        gateway="gw-fenghuang-01",
        version=3,
        devices=[
            PushedDevice(
                id="fh-b3-smoke-0301",
                profile="anju-smoke-mb",
                address="modbus-tcp://192.168.10.20:502?unit=1",
                building="3",
                unit="301",
            )
        ],
        profiles={"anju-smoke-mb": {"id": "anju-smoke-mb"}},
    ),
    "batch_ack": BatchAck(
        gateway="gw-fenghuang-01",
        batches=[
            AckedBatch(spool_epoch="3f9a0c1b7d2e4a65", batch_seq=41, outcome=AckOutcome.STORED),
            AckedBatch(
                spool_epoch="3f9a0c1b7d2e4a65",
                batch_seq=42,
                outcome=AckOutcome.REFUSED,
                reason="unknown device 'x'",
            ),
        ],
        acked_at=T0 + timedelta(milliseconds=40),
    ),
}


def _telemetry_dict() -> dict[str, Any]:
    """The encoded sample batch as a dict, to be broken by a test."""
    document: dict[str, Any] = json.loads(encode(_telemetry()))
    return document


def test_every_wire_type_has_a_sample() -> None:
    assert set(SAMPLES) == set(WIRE_TYPES), "add a sample for each new wire type"


@pytest.mark.parametrize("stem", sorted(WIRE_TYPES))
def test_round_trip(stem: str) -> None:
    sample = SAMPLES[stem]
    assert decode(encode(sample), WIRE_TYPES[stem]) == sample


@pytest.mark.parametrize("stem", sorted(WIRE_TYPES))
def test_schema_version_is_the_first_key(stem: str) -> None:
    document = json.loads(encode(SAMPLES[stem]))
    assert next(iter(document)) == "schema_version"
    assert document["schema_version"] == SCHEMA_VERSION


def test_timestamps_keep_utc_offset_and_fraction() -> None:
    document = json.loads(encode(_telemetry()))
    assert document["sent_at"] == "2024-05-01T08:30:00.125000Z"


def test_event_without_data_omits_it() -> None:
    document = json.loads(encode(_events()))
    assert "data" not in document["items"][1]
    assert document["items"][0]["data"] == {"card_hash": "9f3a01c2", "door": "b3-main"}


def test_decode_error_names_the_field_path_and_keeps_the_payload() -> None:
    document = _telemetry_dict()
    document["items"][1]["seq"] = -1
    payload = json.dumps(document).encode()

    with pytest.raises(WireError) as caught:
        decode(payload, TelemetryBatch, topic="anju/v1/xijin/fenghuang/gw-fenghuang-01/telemetry")

    error = caught.value
    assert "$.items[1].seq" in str(error)
    assert ">= 0" in error.reason
    assert error.payload == payload
    assert error.topic == "anju/v1/xijin/fenghuang/gw-fenghuang-01/telemetry"
    assert str(error).endswith(" on anju/v1/xijin/fenghuang/gw-fenghuang-01/telemetry")
    assert error.excerpt.startswith(f'{{"schema_version": {SCHEMA_VERSION}')


def test_payload_excerpt_is_bounded() -> None:
    error = WireError("bad", payload=b"x" * 1000)
    assert len(error.excerpt) == WireError.PAYLOAD_EXCERPT


@pytest.mark.parametrize("field", ["sent_at", "items[0].ts"])
def test_naive_datetimes_are_rejected(field: str) -> None:
    document = _telemetry_dict()
    if field == "sent_at":
        document["sent_at"] = "2024-05-01T08:30:00"
    else:
        document["items"][0]["ts"] = "2024-05-01T08:30:00"

    with pytest.raises(WireError, match="timezone"):
        decode(json.dumps(document).encode(), TelemetryBatch)


def test_unknown_fields_are_rejected_at_any_depth() -> None:
    top = _telemetry_dict() | {"priority": "high"}
    with pytest.raises(WireError, match="unknown field `priority`"):
        decode(json.dumps(top).encode(), TelemetryBatch)

    nested = _telemetry_dict()
    nested["items"][0]["unit"] = "C"
    with pytest.raises(WireError, match=r"unknown field `unit` - at `\$.items\[0\]`"):
        decode(json.dumps(nested).encode(), TelemetryBatch)


@pytest.mark.parametrize("version", [SCHEMA_VERSION - 1, SCHEMA_VERSION + 1, 0])
def test_another_schema_version_is_named_as_such(version: int) -> None:
    document = _telemetry_dict() | {"schema_version": version}
    with pytest.raises(SchemaVersionMismatch) as caught:
        decode(json.dumps(document).encode(), TelemetryBatch, topic="anju/v1/a/b/gw/telemetry")
    assert (caught.value.found, caught.value.expected) == (version, SCHEMA_VERSION)
    assert f"schema_version {version}, this side reads {SCHEMA_VERSION}" in str(caught.value)
    assert "upgrade" in str(caught.value)


def test_a_schema_version_that_is_not_a_number_is_a_plain_wire_error() -> None:
    document = _telemetry_dict() | {"schema_version": "2"}
    with pytest.raises(WireError, match=r"\$.schema_version") as caught:
        decode(json.dumps(document).encode(), TelemetryBatch)
    assert not isinstance(caught.value, SchemaVersionMismatch)


@pytest.mark.parametrize(
    ("field", "length"),
    [("reason", 1025), ("point", 65), ("zone", 65), ("door", 65), ("card_hash", 129)],
)
def test_event_strings_are_bounded(field: str, length: int) -> None:
    document: dict[str, Any] = json.loads(encode(_events()))
    document["items"][0]["data"][field] = "x" * length
    with pytest.raises(WireError, match=rf"\$.items\[0\].data.{field}"):
        decode(json.dumps(document).encode(), EventBatch)
    document["items"][0]["data"][field] = "x" * (length - 1)
    decode(json.dumps(document).encode(), EventBatch)


def test_command_arguments_are_bounded() -> None:
    document: dict[str, Any] = json.loads(encode(SAMPLES["command"]))
    document["args"] = {f"a{n}": n for n in range(65)}
    with pytest.raises(WireError, match=r"\$.args"):
        decode(json.dumps(document).encode(), Command)


def test_a_refused_batch_still_gives_its_key() -> None:
    document = _telemetry_dict() | {"schema_version": 1}
    document["items"] = "not a list"
    header = read_batch_header(json.dumps(document).encode())
    assert header is not None
    assert (header.gateway, header.spool_epoch, header.batch_seq) == (
        "gw-fenghuang-01",
        "3f9a0c1b7d2e4a65",
        41,
    )


@pytest.mark.parametrize(
    "payload",
    [b"[1]", b'{"gateway": "gw"}', b'{"gateway": "gw", "spool_epoch": "x", "batch_seq": 1}'],
)
def test_no_key_is_read_from_a_payload_without_one(payload: bytes) -> None:
    assert read_batch_header(payload) is None


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        ("gateway", "GW-01", "$.gateway"),
        ("community", "fenghuang", "$.community"),
        ("spool_epoch", "not-hex", "$.spool_epoch"),
        ("items", [], "$.items"),
        ("metric", "humidity_pct", "$.items[0].metric"),
    ],
)
def test_constraints_are_enforced(path: str, value: object, expected: str) -> None:
    document = _telemetry_dict()
    if path == "metric":
        document["items"][0]["metric"] = value
    else:
        document[path] = value
    with pytest.raises(WireError) as caught:
        decode(json.dumps(document).encode(), TelemetryBatch)
    assert f"`{expected}`" in str(caught.value)


@pytest.mark.parametrize(
    ("payload", "problem"),
    [(b'{"schema_version": 2,', "truncated"), (b"[1, 2]", "Expected `object`, got `array`")],
)
def test_malformed_json_is_a_wire_error(payload: bytes, problem: str) -> None:
    with pytest.raises(WireError, match=problem) as caught:
        decode(payload, TelemetryBatch)
    assert caught.value.payload == payload


@pytest.mark.parametrize(
    ("channel", "command_id"),
    [
        (Channel.TELEMETRY, None),
        (Channel.EVENTS, None),
        (Channel.STATUS, None),
        (Channel.COMMAND, "cmd-0001"),
        (Channel.COMMAND_RESULT, "cmd-0001"),
    ],
)
def test_topic_round_trip(channel: Channel, command_id: str | None) -> None:
    topic = topic_for("xijin/fenghuang", "gw-01", channel, command_id)
    assert topic.startswith("anju/v1/xijin/fenghuang/gw-01/")
    assert parse_topic(topic) == TopicAddress("xijin/fenghuang", "gw-01", channel, command_id)


def test_topic_for_checks_the_command_id() -> None:
    with pytest.raises(WireError, match="needs id"):
        topic_for("xijin/fenghuang", "gw-01", Channel.COMMAND)
    with pytest.raises(WireError, match="takes no id"):
        topic_for("xijin/fenghuang", "gw-01", Channel.TELEMETRY, "cmd-0001")


@pytest.mark.parametrize(
    ("topic", "problem"),
    [
        ("anju/v2/xijin/fenghuang/gw-01/telemetry", "not under anju/v1"),
        ("anju/v1/fenghuang/gw-01/telemetry", "not under anju/v1"),
        ("anju/v1/xijin/fenghuang/gw-01/readings", "unknown channel 'readings'"),
        ("anju/v1/xijin/fenghuang/gw-01/cmd", "wrong number of topic levels"),
        ("anju/v1/xijin/fenghuang/gw-01/telemetry/extra", "wrong number of topic levels"),
        ("anju/v1/xijin//gw-01/status", "wrong number of topic levels"),
    ],
)
def test_bad_topics_are_rejected(topic: str, problem: str) -> None:
    with pytest.raises(WireError, match=problem) as caught:
        parse_topic(topic)
    assert caught.value.topic == topic


def test_subscriptions_cover_every_gateway() -> None:
    assert subscription(Channel.TELEMETRY) == "anju/v1/+/+/+/telemetry"
    assert subscription(Channel.COMMAND) == "anju/v1/+/+/+/cmd/+"
    assert subscription(Channel.EVENTS, shared_group="ingest") == (
        "$share/ingest/anju/v1/+/+/+/events"
    )
