"""Report by exception and edge-triggered events of the normaliser."""

import math
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


def granted_events(door: DeviceNormaliser, count: int, seconds: float) -> list[EventType]:
    granted = {"event_code": 1, "event_card_hash": 0xDEADBEEF}
    _, events = door.normalise(door_sample(event_count=count, **granted), at(seconds))
    return [e.type for e in events if e.type is EventType.ACCESS_GRANTED]


def test_sequence_going_back_is_a_restart_not_a_new_record() -> None:
    """A controller that rebooted counts from 0 again: its last record is not new."""
    door = DeviceNormaliser("fh-b3-door-01", DOOR)
    assert granted_events(door, 7, 0) == []
    assert granted_events(door, 8, 1) == [EventType.ACCESS_GRANTED]
    assert granted_events(door, 0, 2) == []
    assert granted_events(door, 0, 3) == []
    assert granted_events(door, 1, 4) == [EventType.ACCESS_GRANTED]
    assert granted_events(door, 300, 5) == [EventType.ACCESS_GRANTED]
    assert granted_events(door, 2, 6) == []


def test_sequence_wrapping_at_16_bits_is_a_new_record() -> None:
    door = DeviceNormaliser("fh-b3-door-01", DOOR)
    assert granted_events(door, 65_534, 0) == []
    assert granted_events(door, 65_535, 1) == [EventType.ACCESS_GRANTED]
    assert granted_events(door, 2, 2) == [EventType.ACCESS_GRANTED]


def test_device_restarted_forgets_the_sequence() -> None:
    door = DeviceNormaliser("fh-b3-door-01", DOOR)
    assert granted_events(door, 7, 0) == []
    door.reset_observation()
    assert granted_events(door, 9, 1) == []
    assert granted_events(door, 10, 2) == [EventType.ACCESS_GRANTED]


DOOR_IO = load_profile(
    Path(__file__).resolve().parents[2] / "device_profiles/door/anju-door-io-mb.yaml"
)


def held_open_events(door: DeviceNormaliser, is_open: bool, seconds: float) -> list[EventType]:
    _, events = door.normalise({"door_open": is_open}, at(seconds))
    return [e.type for e in events]


def sparse_door() -> DeviceNormaliser:
    """A contact read every 10 s, so that reads up to 30 s apart keep a hold going."""
    return DeviceNormaliser("fh-b3-door-io-01", DOOR_IO, poll_interval_s=10.0)


def test_contact_open_past_for_s_becomes_held_open_once() -> None:
    door = sparse_door()
    assert held_open_events(door, True, 0) == []
    assert held_open_events(door, True, 29.5) == []
    assert held_open_events(door, True, 30) == [EventType.DOOR_HELD_OPEN]
    assert held_open_events(door, True, 31) == []
    assert held_open_events(door, False, 32) == [EventType.DOOR_CLOSED]


def test_closing_before_for_s_restarts_the_count_and_sends_no_clear() -> None:
    door = sparse_door()
    assert held_open_events(door, True, 0) == []
    assert held_open_events(door, False, 20) == []
    assert held_open_events(door, True, 25) == []
    assert held_open_events(door, True, 50) == []
    assert held_open_events(door, True, 55) == [EventType.DOOR_HELD_OPEN]


def test_for_s_is_measured_from_read_timestamps_not_read_count() -> None:
    """Two reads 30 s apart (within 3 poll intervals) are enough: open at both."""
    door = sparse_door()
    assert held_open_events(door, True, 0) == []
    assert held_open_events(door, True, 30) == [EventType.DOOR_HELD_OPEN]


def test_a_gap_in_the_reads_restarts_the_hold() -> None:
    """Open, then no reads for 40 s (device offline), open again: not held for 30 s."""
    door = DeviceNormaliser("fh-b3-door-io-01", DOOR_IO)  # polled every 0.5 s
    assert held_open_events(door, True, 0) == []
    assert held_open_events(door, True, 0.5) == []
    assert held_open_events(door, True, 40) == []
    for second in range(41, 70):
        assert held_open_events(door, True, second) == [], second
    assert held_open_events(door, True, 70) == [EventType.DOOR_HELD_OPEN]


def test_a_gap_after_held_open_fired_sends_no_clear_and_no_repeat() -> None:
    door = DeviceNormaliser("fh-b3-door-io-01", DOOR_IO, poll_interval_s=10.0)
    assert held_open_events(door, True, 0) == []
    assert held_open_events(door, True, 30) == [EventType.DOOR_HELD_OPEN]
    assert held_open_events(door, True, 100) == []
    door.device_restarted()
    assert held_open_events(door, True, 101) == []
    assert held_open_events(door, False, 102) == [EventType.DOOR_CLOSED]


def test_device_restarted_restarts_the_hold() -> None:
    door = sparse_door()
    assert held_open_events(door, True, 0) == []
    assert held_open_events(door, True, 20) == []
    door.device_restarted()
    assert held_open_events(door, True, 25) == []
    assert held_open_events(door, True, 50) == []
    assert held_open_events(door, True, 55) == [EventType.DOOR_HELD_OPEN]


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
    detector = DeviceNormaliser("fh-b3-smoke-01", profile, poll_interval_s=30.0)
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


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_dropped_and_counted(detector: DeviceNormaliser, bad: float) -> None:
    detector.normalise(QUIET, at(0))
    readings, events = detector.normalise(
        {**QUIET, "temperature": bad, "battery": bad}, at(SMOKE.heartbeat_s + 1)
    )
    # The heartbeat is due: every finite metric is sent, the non-finite ones are not.
    assert {r.metric for r in readings} == {Metric.SMOKE_OBSCURATION, Metric.CO}
    assert all(math.isfinite(r.value) for r in readings)
    # -inf is below the battery.low threshold: it must not fire it.
    assert events == []
    assert detector.rejected_values == 2


def test_rejected_values_counts_each_dropped_value() -> None:
    detector = DeviceNormaliser("fh-b3-smoke-01", SMOKE)
    readings, events = detector.normalise({**QUIET, "battery": -math.inf, "co": math.nan}, at(0))
    assert detector.rejected_values == 2
    assert {r.metric for r in readings} == {Metric.SMOKE_OBSCURATION, Metric.TEMPERATURE}
    assert events == []
    # The last value sent is kept, not replaced by the bad one: a good value later is
    # compared with the last good one.
    readings, _ = detector.normalise({**QUIET, "battery": 90}, at(1))
    assert {r.metric for r in readings} == {Metric.CO, Metric.BATTERY}


CAMERA = load_profile(
    Path(__file__).resolve().parents[2] / "device_profiles/camera/anju-camera-serial.yaml"
)


@pytest.mark.parametrize(("direction", "expected"), [("in", "in"), ("out", "out")])
def test_a_line_crossing_keeps_its_count_whole_and_its_direction(
    direction: str, expected: str
) -> None:
    camera = DeviceNormaliser("gate-cam-01", CAMERA)
    sample = {"line_channel": 1, "line_id": "L1", "line_direction": direction, "line_count": 2}
    _, events = camera.normalise(sample, at(0))

    (crossing,) = events
    assert crossing.type is EventType.CAMERA_LINE_CROSSING
    assert crossing.data.count == 2
    assert isinstance(crossing.data.count, int)
    assert crossing.data.direction == expected
    assert crossing.data.zone == "L1"
