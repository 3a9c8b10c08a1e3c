"""Pure parts of the cloud tier (no services): rules, message decoding, settings, backoff."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cloud.backoff import Backoff
from cloud.errors import SettingsError
from cloud.ingest.writer import decode_message
from cloud.rules.drafts import DeviceContext, IncidentType, Priority
from cloud.rules.emergency import evaluate
from cloud.settings import load_settings
from schemas.topics import Channel, topic_for
from schemas.vocabulary import EventType, Severity
from schemas.wire import Event, EventBatch, encode

DEVICE = DeviceContext("w-1", "wearable", 7, "5", "1")


def _event(kind: EventType) -> Event:
    return Event(device="w-1", ts=datetime.now(UTC), seq=1, type=kind, severity=Severity.CRITICAL)


@pytest.mark.parametrize(
    ("event_type", "incident_type", "priority"),
    [
        (EventType.SMOKE_ALARM, IncidentType.FIRE, Priority.CRITICAL),
        (EventType.WEARABLE_SOS, IncidentType.SOS, Priority.CRITICAL),
        (EventType.WEARABLE_FALL, IncidentType.FALL, Priority.CRITICAL),
        (EventType.WEARABLE_HEART_RATE_ABNORMAL, IncidentType.HEART_RATE_ABNORMAL, Priority.URGENT),
    ],
)
def test_emergency_events_draft_incidents(
    event_type: EventType, incident_type: IncidentType, priority: Priority
) -> None:
    draft = evaluate(_event(event_type), DEVICE)
    assert draft is not None
    assert (draft.type, draft.priority, draft.cause) == (incident_type, priority, event_type)
    assert (draft.community_id, draft.building, draft.unit, draft.device_id) == (7, "5", "1", "w-1")


@pytest.mark.parametrize("event_type", [EventType.SMOKE_CLEARED, EventType.DOOR_CLOSED])
def test_other_events_draft_nothing(event_type: EventType) -> None:
    assert evaluate(_event(event_type), DEVICE) is None


def _batch(gateway: str, community: str = "xijin/fenghuang") -> bytes:
    return encode(
        EventBatch(
            gateway=gateway,
            community=community,
            spool_epoch="ab" * 8,
            batch_seq=3,
            sent_at=datetime.now(UTC),
            items=[_event(EventType.WEARABLE_SOS)],
        )
    )


def test_decode_message_accepts_a_matching_batch() -> None:
    decoded = decode_message(topic_for("xijin/fenghuang", "gw-1", Channel.EVENTS), _batch("gw-1"))
    assert decoded.rejection is None
    assert decoded.batch is not None
    assert (decoded.gateway, decoded.batch.batch_seq, decoded.items) == ("gw-1", 3, 1)
    assert decoded.carries_events


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("anju/v1/x", _batch("gw-1"), "bad topic"),
        (topic_for("xijin/fenghuang", "gw-1", Channel.STATUS), _batch("gw-1"), "not ingested"),
        (topic_for("xijin/fenghuang", "gw-1", Channel.EVENTS), b"[]", "malformed events payload"),
        (topic_for("xijin/fenghuang", "gw-1", Channel.TELEMETRY), _batch("gw-1"), "malformed"),
        (topic_for("xijin/fenghuang", "gw-1", Channel.EVENTS), _batch("gw-2"), "payload gateway"),
        (topic_for("xijin/fenghuang", "gw-1", Channel.EVENTS), _batch("gw-1", "a/b"), "community"),
    ],
)
def test_decode_message_rejects_with_a_reason(topic: str, payload: bytes, reason: str) -> None:
    decoded = decode_message(topic, payload)
    assert decoded.batch is None
    assert decoded.rejection is not None
    assert reason in decoded.rejection
    assert (decoded.topic, decoded.payload) == (topic, payload)


def test_settings_name_the_bad_variable() -> None:
    with pytest.raises(SettingsError, match="ANJU_DATABASE_URL: is not set"):
        load_settings({})
    with pytest.raises(SettingsError, match="ANJU_MQTT_URL") as caught:
        load_settings({"ANJU_DATABASE_URL": "postgresql://a@h/db", "ANJU_MQTT_URL": "http://x"})
    assert "mqtt://" in caught.value.expected
    with pytest.raises(SettingsError, match="ANJU_API_PORT"):
        load_settings(
            {
                "ANJU_DATABASE_URL": "postgresql://a@h/db",
                "ANJU_MQTT_URL": "mqtt://h",
                "ANJU_API_PORT": "x",
            }
        )
    settings = load_settings(
        {"ANJU_DATABASE_URL": "postgresql://a@h/db", "ANJU_MQTT_URL": "mqtt://h:1884?version=3.1.1"}
    )
    assert (settings.broker.port, settings.broker.version, settings.api_port) == (
        1884,
        "3.1.1",
        8080,
    )


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    backoff = Backoff(initial=1.0, cap=5.0, uniform=lambda low, high: high)
    assert [backoff.next_delay() for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    backoff.reset()
    assert backoff.next_delay() == 1.0
    low = Backoff(initial=1.0, cap=5.0, uniform=lambda low, high: low)
    assert low.next_delay() == 0.5
