"""Pure parts of the cloud tier (no services): rules, message decoding, settings, backoff."""

from __future__ import annotations

import re
from datetime import UTC, datetime, time
from pathlib import Path

import pytest
import yaml

from cloud.backoff import Backoff
from cloud.errors import SettingsError
from cloud.ingest.writer import decode_message
from cloud.rules.config import Rule, RulesError, RuleSet, load_rules
from cloud.rules.engine import in_hours
from cloud.settings import load_settings
from schemas.topics import Channel, topic_for
from schemas.vocabulary import EventType, Severity
from schemas.wire import Event, EventBatch, encode


def _event(kind: EventType) -> Event:
    return Event(device="w-1", ts=datetime.now(UTC), seq=1, type=kind, severity=Severity.CRITICAL)


def _rules(text: str) -> RuleSet:
    return RuleSet.model_validate(yaml.safe_load(text))


def test_the_packaged_rules_cover_the_plan() -> None:
    rules = load_rules()
    triggered = {
        event: [rule.incident for _, rule in rules.triggered_by(event, "xijin/fenghuang")]
        for event in EventType
    }
    assert triggered[EventType.SMOKE_ALARM] == ["fire", "resident_smoke_alarm"]
    assert triggered[EventType.WEARABLE_SOS] == ["sos"]
    assert triggered[EventType.WEARABLE_FALL] == ["fall"]
    assert triggered[EventType.DOOR_FORCED_OPEN] == ["door_forced_open"]
    assert triggered[EventType.CAMERA_LINE_CROSSING] == ["tailgating"]
    assert triggered[EventType.SMOKE_CLEARED] == []
    assert {rule.device_kind for _, rule in rules.sweeps("xijin/fenghuang")} == {"smoke", "gateway"}
    priorities = {rule.incident: rule.priority for rule in rules.rules.values()}
    assert priorities["sos"] == priorities["fall"] == priorities["fire"] == 1
    assert priorities["heart_rate_abnormal"] == 2
    assert priorities["inactivity"] == priorities["smoke_detector_offline"] == 3


def test_a_community_override_changes_or_disables_a_rule_there_only() -> None:
    rules = _rules(
        """
rules:
  held: {trigger: door.held_open, kind: at_least, field: duration_s, value: 120,
         incident: door_held_open, priority: 3}
  sos: {trigger: wearable.sos, kind: event, incident: sos, priority: 1}
evacuation: {after: sos}
overrides:
  xijin/quiet:
    held: {value: 600}
    sos: {enabled: false}
"""
    )
    assert rules.for_community("xijin/quiet")["held"].value == 600
    assert "sos" not in rules.for_community("xijin/quiet")
    assert rules.for_community("xijin/fenghuang")["held"].value == 120
    assert rules.for_community("xijin/quiet")["held"].lateness_s == 5.0
    assert [name for name, _ in rules.triggered_by(EventType.WEARABLE_SOS, "xijin/x")] == ["sos"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (
            "rules: {a: {trigger: door.held_open, kind: at_least, incident: x, priority: 3}}",
            "needs field, value",
        ),
        (
            "rules: {a: {trigger: nope.event, kind: event, incident: x, priority: 3}}",
            "rules.a.trigger",
        ),
        (
            "rules: {a: {kind: liveness, device_kind: smoke, after_s: 5,"
            " trigger: smoke.alarm, incident: x, priority: 3}}",
            "drop 'trigger'",
        ),
        (
            "rules: {fire: {trigger: smoke.alarm, kind: event, incident: x, priority: 1}}\n"
            "overrides: {c/d: {b: {}}}",
            "no rule 'b'",
        ),
        ("timezone: Mars/Base\nrules: {}", "unknown time zone"),
        (
            "rules: {fire: {trigger: camera.intrusion, kind: schedule, hours: '18:00-24:00',"
            " incident: x, priority: 2}}",
            "24:00 is not a time of day",
        ),
        (
            "rules: {fire: {trigger: door.held_open, kind: at_least, field: duraton_s,"
            " value: 1, incident: x, priority: 3}}",
            "field 'duraton_s' is not in event data",
        ),
        (
            "rules: {sos: {trigger: wearable.sos, kind: event, incident: sos, priority: 1}}",
            "evacuation follows rule 'fire', which is not there",
        ),
        (
            "rules: {fire: {trigger: access.denied, kind: burst, count: 5, within_s: 60,"
            " lateness_s: -1, incident: x, priority: 3}}",
            "rules.fire.lateness_s",
        ),
    ],
)
def test_a_bad_rule_file_names_the_rule_and_the_problem(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    with pytest.raises(RulesError, match=re.escape(problem)) as caught:
        load_rules(path)
    assert str(path) in str(caught.value)


@pytest.mark.parametrize(
    ("hours", "local", "inside"),
    [
        ("22:00-06:00", time(23, 30), True),
        ("22:00-06:00", time(5, 59), True),
        ("22:00-06:00", time(6, 0), False),
        ("22:00-06:00", time(12, 0), False),
        ("09:00-17:00", time(9, 0), True),
        ("09:00-17:00", time(17, 0), False),
    ],
)
def test_closed_hours_may_cross_midnight(hours: str, local: time, inside: bool) -> None:
    rule = Rule(
        trigger=EventType.CAMERA_INTRUSION, kind="schedule", hours=hours, incident="x", priority=2
    )
    assert in_hours(rule, local) is inside


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
    assert (settings.broker.port, settings.broker.version, settings.api.port) == (
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
