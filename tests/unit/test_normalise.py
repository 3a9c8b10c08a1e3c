"""Report by exception and edge-triggered events of the normaliser."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from edge.normalise import DeviceNormaliser, polled_points
from schemas.profile import EventRule, load_profile
from schemas.vocabulary import EventType, Metric, Severity

SMOKE = load_profile(
    Path(__file__).resolve().parents[2] / "device_profiles/smoke/anju-smoke-mb.yaml"
)
T0 = datetime(2026, 11, 28, 8, 0, tzinfo=UTC)
QUIET = {"status": 0, "obscuration": 12, "temperature": 215, "co": 0, "battery": 90}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.fixture
def detector() -> DeviceNormaliser:
    return DeviceNormaliser("fh-b3-smoke-01", SMOKE)


def test_first_read_sends_every_metric_scaled(detector: DeviceNormaliser) -> None:
    readings, events = detector.normalise(QUIET, at(0))
    assert {r.metric: r.value for r in readings} == {
        Metric.SMOKE_OBSCURATION: pytest.approx(0.12),
        Metric.TEMPERATURE: pytest.approx(21.5),
        Metric.CO: 0.0,
        Metric.BATTERY: 90.0,
    }
    assert events == []
    assert [r.seq for r in readings] == [1, 2, 3, 4]


def test_unchanged_values_wait_for_the_heartbeat(detector: DeviceNormaliser) -> None:
    detector.normalise(QUIET, at(0))
    assert detector.normalise(QUIET, at(1)) == ([], [])
    within_deadband = {**QUIET, "temperature": 219}
    assert detector.normalise(within_deadband, at(2)) == ([], [])
    readings, _ = detector.normalise(QUIET, at(SMOKE.heartbeat_s))
    assert len(readings) == 4


def test_change_beyond_deadband_is_sent_alone(detector: DeviceNormaliser) -> None:
    detector.normalise(QUIET, at(0))
    readings, _ = detector.normalise({**QUIET, "temperature": 225}, at(1))
    assert [(r.metric, r.value) for r in readings] == [(Metric.TEMPERATURE, pytest.approx(22.5))]


def test_alarm_bit_fires_once_then_clears(detector: DeviceNormaliser) -> None:
    detector.normalise(QUIET, at(0))
    _, events = detector.normalise({**QUIET, "status": 0b1, "obscuration": 412}, at(1))
    assert [(e.type, e.severity) for e in events] == [(EventType.SMOKE_ALARM, Severity.CRITICAL)]
    assert events[0].data.value == pytest.approx(4.12)
    _, again = detector.normalise({**QUIET, "status": 0b1, "obscuration": 415}, at(2))
    assert again == []
    _, cleared = detector.normalise(QUIET, at(3))
    assert [e.type for e in cleared] == [EventType.SMOKE_CLEARED]


def test_alarm_present_at_first_read_fires(detector: DeviceNormaliser) -> None:
    _, events = detector.normalise({**QUIET, "status": 0b1}, at(0))
    assert [e.type for e in events] == [EventType.SMOKE_ALARM]


def test_threshold_rule_carries_value_and_threshold(detector: DeviceNormaliser) -> None:
    _, events = detector.normalise({**QUIET, "battery": 9}, at(0))
    (low,) = events
    assert low.type is EventType.BATTERY_LOW
    assert (low.data.value, low.data.threshold, low.data.point) == (9.0, 15.0, "battery")


def test_several_bits_fire_independently(detector: DeviceNormaliser) -> None:
    _, events = detector.normalise({**QUIET, "status": 0b1010}, at(0))
    assert {e.type for e in events} == {EventType.SMOKE_FAULT, EventType.DEVICE_TAMPER}


def test_sequence_counts_readings_and_events_together(detector: DeviceNormaliser) -> None:
    readings, events = detector.normalise({**QUIET, "status": 1}, at(0))
    seqs = sorted(item.seq for item in [*readings, *events])
    assert seqs == list(range(1, len(seqs) + 1))


DOOR = load_profile(Path(__file__).resolve().parents[2] / "device_profiles/door/anju-door-mb.yaml")


def door_sample(**changes: int) -> dict[str, int]:
    sample = dict.fromkeys((p.name for p in polled_points(DOOR)), 0)
    return {**sample, **changes}


def test_occurrence_with_sequence_fires_once_per_new_record() -> None:
    door = DeviceNormaliser("fh-b3-door-01", DOOR)
    granted = {"event_code": 1, "event_card_hash": 0xDEADBEEF}
    _, at_start = door.normalise(door_sample(event_count=7, **granted), at(0))
    assert EventType.ACCESS_GRANTED not in {e.type for e in at_start}
    _, same_record = door.normalise(door_sample(event_count=7, **granted), at(1))
    assert EventType.ACCESS_GRANTED not in {e.type for e in same_record}
    _, new_record = door.normalise(door_sample(event_count=8, **granted), at(2))
    (event,) = [e for e in new_record if e.type is EventType.ACCESS_GRANTED]
    assert event.data.card_hash == str(0xDEADBEEF)


DOOR_IO = load_profile(
    Path(__file__).resolve().parents[2] / "device_profiles/door/anju-door-io-mb.yaml"
)


def held_open_events(door: DeviceNormaliser, is_open: bool, seconds: float) -> list[EventType]:
    _, events = door.normalise({"door_open": is_open}, at(seconds))
    return [e.type for e in events]


def test_contact_open_past_for_s_becomes_held_open_once() -> None:
    door = DeviceNormaliser("fh-b3-door-io-01", DOOR_IO)
    assert held_open_events(door, True, 0) == []
    assert held_open_events(door, True, 29.5) == []
    assert held_open_events(door, True, 30) == [EventType.DOOR_HELD_OPEN]
    assert held_open_events(door, True, 31) == []
    assert held_open_events(door, False, 32) == [EventType.DOOR_CLOSED]


def test_closing_before_for_s_restarts_the_count_and_sends_no_clear() -> None:
    door = DeviceNormaliser("fh-b3-door-io-01", DOOR_IO)
    assert held_open_events(door, True, 0) == []
    assert held_open_events(door, False, 20) == []
    assert held_open_events(door, True, 25) == []
    assert held_open_events(door, True, 50) == []
    assert held_open_events(door, True, 55) == [EventType.DOOR_HELD_OPEN]


def test_for_s_is_measured_from_read_timestamps_not_read_count() -> None:
    """One late read after a long gap is enough: the door was open at both reads."""
    door = DeviceNormaliser("fh-b3-door-io-01", DOOR_IO)
    assert held_open_events(door, True, 0) == []
    assert held_open_events(door, True, 45) == [EventType.DOOR_HELD_OPEN]


def test_for_s_on_a_threshold_rule_keeps_its_data() -> None:
    profile = SMOKE.model_copy(
        update={
            "events": [
                EventRule.model_validate(
                    {"type": "battery.low", "point": "battery", "when": {"below": 15, "for_s": 60}}
                )
            ]
        }
    )
    detector = DeviceNormaliser("fh-b3-smoke-01", profile)
    assert detector.normalise({**QUIET, "battery": 9}, at(0))[1] == []
    _, events = detector.normalise({**QUIET, "battery": 8}, at(60))
    (low,) = events
    assert (low.type, low.data.value, low.data.threshold) == (EventType.BATTERY_LOW, 8.0, 15.0)


def test_for_s_is_refused_on_occurrence_rules() -> None:
    with pytest.raises(ValidationError, match=r"'when\.for_s' applies to level rules only"):
        EventRule.model_validate(
            {
                "type": "access.granted",
                "point": "event_code",
                "when": {"equals": 1, "for_s": 5},
                "mode": "occurrence",
            }
        )


def test_door_profiles_raise_held_open_from_one_rule_each() -> None:
    """Two rules for one hold would send two door.held_open events for it."""
    for profile in (DOOR, DOOR_IO):
        rules = [r for r in profile.events if r.type is EventType.DOOR_HELD_OPEN]
        assert len(rules) == 1, profile.id
