"""Turns raw point values of one device into readings and events of the shared schema.

Pure and synchronous: the poller hands in what it read and the time it read it, and
gets back what should be sent. State kept per device is only what the rules need to
see edges (a bit that was clear and is now set), when a condition with ``for_s``
started to hold, and what report-by-exception needs (the last value sent and when).

A value that is not a finite number (NaN or infinity from an f32 register) is dropped
here and counted: JSON has no such numbers, and one would get the whole telemetry
batch refused by the cloud. It neither makes a reading nor moves a rule.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal, get_args, get_origin

import msgspec

from edge.drivers.contract import RawValue, Sample
from schemas.profile import Condition, DeviceProfile, EventRule, Point
from schemas.vocabulary import EVENT_SEVERITY, EventType, Metric
from schemas.wire import Event, EventData, Reading

SEQUENCE_WRAP_WINDOW = 256
"""A record counter that decreases is taken as wrapped (a new record) only if it went
forward by at most this many, modulo its width (65535 -> 2); any other decrease is the
device restarting its count (a reboot: 8 -> 0), which re-baselines without an event."""

HOLD_GAP_INTERVALS = 3.0
"""A ``for_s`` hold restarts when two reads are more than this many poll intervals apart."""


def polled_points(profile: DeviceProfile) -> list[Point]:
    """The points a routine poll needs: those with a metric and those rules look at.

    Configuration points (thresholds, reset registers, serial numbers) are read on
    demand by the installer, not every poll cycle.
    """
    used = {rule.point for rule in profile.events}
    used.update(name for rule in profile.events for name in rule.data.values())
    used.update(rule.sequence for rule in profile.events if rule.sequence is not None)
    return [p for p in profile.points if p.metric is not None or p.name in used]


def engineering_value(point: Point, raw: RawValue | str) -> float | str:
    """``raw * scale + offset`` for numbers, 1.0/0.0 for booleans, strings unchanged."""
    if isinstance(raw, str):
        return raw
    return float(raw) * point.scale + point.offset


def _holds(condition: Condition, raw: RawValue | str, value: float | str) -> bool:
    if condition.bit is not None:
        return isinstance(raw, int) and bool(int(raw) >> condition.bit & 1)
    if condition.equals is not None:
        return raw == condition.equals or str(raw) == str(condition.equals)
    if isinstance(value, str):
        return False
    if condition.above is not None:
        return value > condition.above
    return condition.below is not None and value < condition.below


@dataclass
class DeviceNormaliser:
    """Report-by-exception and edge-triggered events for one device.

    ``seq`` counts every item this device produced, readings and events alike, so the
    cloud can check that nothing went missing per device.
    """

    device_id: str
    profile: DeviceProfile
    seq: int = 0
    rejected_values: int = 0
    """Point values dropped for not being finite numbers (NaN, infinity)."""
    poll_interval_s: float | None = None
    """How often the device is read (default: the profile's); sets the longest gap
    between two reads that a ``for_s`` hold survives."""
    _last_sent: dict[Metric, tuple[float, datetime]] = field(default_factory=dict)
    _levels: dict[int, bool] = field(default_factory=dict)
    _holding_since: dict[int, datetime] = field(default_factory=dict)
    _held_last: dict[int, datetime] = field(default_factory=dict)
    _sequences: dict[int, RawValue | str] = field(default_factory=dict)
    _points: dict[str, Point] = field(init=False)
    _metric_points: list[tuple[Point, Metric]] = field(init=False)

    def __post_init__(self) -> None:
        self._points = {point.name: point for point in self.profile.points}
        self._metric_points = [
            (point, point.metric) for point in self.profile.points if point.metric is not None
        ]
        if self.poll_interval_s is None:
            self.poll_interval_s = self.profile.poll_interval_s

    def device_restarted(self) -> None:
        """Forget what was observed of the device's counters and timers (it may have rebooted).

        Record counters are re-baselined by the next read (no event), and ``for_s``
        holds start counting again. Edge levels (an alarm in progress) and the values
        last sent are kept, so a condition that still holds is not reported twice.
        """
        self._sequences.clear()
        self._holding_since.clear()
        self._held_last.clear()

    reset_observation = device_restarted

    def next_seq(self) -> int:
        """Claim the device's next sequence number, also for items made elsewhere.

        Gap reports from the spool take their numbers here, so a device's readings and
        events keep one unbroken sequence.
        """
        self.seq += 1
        return self.seq

    def event(self, event_type: EventType, ts: datetime, data: EventData | None = None) -> Event:
        """An event of this device with the next sequence number and its standard severity."""
        return Event(
            device=self.device_id,
            ts=ts,
            seq=self.next_seq(),
            type=event_type,
            severity=EVENT_SEVERITY[event_type],
            data=data or EventData(),
        )

    def normalise(self, sample: Sample, ts: datetime) -> tuple[list[Reading], list[Event]]:
        """Readings due to be sent and events that fired for one read taken at ``ts``."""
        values: dict[str, float | str] = {}
        for name, raw in sample.items():
            value = engineering_value(self._points[name], raw)
            if isinstance(value, float) and not math.isfinite(value):
                self.rejected_values += 1
                continue
            values[name] = value
        events = [
            event
            for index, rule in enumerate(self.profile.events)
            if rule.point in values
            for event in self._apply_rule(index, rule, sample, values, ts)
        ]
        readings = [
            reading
            for point, metric in self._metric_points
            if point.name in values
            if (reading := self._reading(point, metric, values[point.name], ts)) is not None
        ]
        return readings, events

    def _reading(
        self, point: Point, metric: Metric, value: float | str, ts: datetime
    ) -> Reading | None:
        if isinstance(value, str):
            return None
        last = self._last_sent.get(metric)
        if last is not None:
            last_value, last_ts = last
            stale = (ts - last_ts).total_seconds() >= self.profile.heartbeat_s
            if not stale and abs(value - last_value) <= point.deadband:
                return None
        self._last_sent[metric] = (value, ts)
        return Reading(
            device=self.device_id, ts=ts, seq=self.next_seq(), metric=metric, value=value
        )

    def _apply_rule(
        self,
        index: int,
        rule: EventRule,
        sample: Sample,
        values: Mapping[str, float | str],
        ts: datetime,
    ) -> list[Event]:
        holds = _holds(rule.when, sample[rule.point], values[rule.point])
        if rule.mode == "occurrence":
            if rule.sequence is not None:
                counter = sample.get(rule.sequence)
                seen = self._sequences.get(index)
                if counter is not None:
                    self._sequences[index] = counter
                # The record under the counter is new only if the counter moved on
                # since the last read; the record present at start-up predates us, and
                # so does the one under a counter that restarted.
                holds = (
                    holds
                    and seen is not None
                    and counter is not None
                    and counter != seen
                    and not _restarted(seen, counter)
                )
            return [self.event(rule.type, ts, self._data(rule, values))] if holds else []
        was = self._levels.get(index, False)
        if rule.when.for_s is not None:
            # Once fired, a condition that still holds stays fired, even if its hold
            # count restarted (a gap in the reads, the device back online).
            held = self._held_long_enough(index, holds, rule.when.for_s, ts)
            holds = held or (holds and was)
        self._levels[index] = holds
        if holds and not was:
            return [self.event(rule.type, ts, self._data(rule, values))]
        if was and not holds and rule.clear is not None:
            return [self.event(rule.clear, ts, self._data(rule, values))]
        return []

    def _held_long_enough(self, index: int, holds: bool, for_s: float, ts: datetime) -> bool:
        """Whether the condition has held for ``for_s`` by the timestamps of the reads.

        Measured from the first read that saw it hold; any read that sees it not hold
        starts the count again. Reads are the only evidence the gateway has, so time
        without reads is not counted as holding: when two reads that see it hold are
        more than ``HOLD_GAP_INTERVALS`` poll intervals apart (reads failed, the device
        was offline), the count starts again from the later one, and
        :meth:`device_restarted` starts it again too.
        """
        if not holds:
            self._holding_since.pop(index, None)
            self._held_last.pop(index, None)
            return False
        last = self._held_last.get(index)
        self._held_last[index] = ts
        interval = self.poll_interval_s or self.profile.poll_interval_s
        if last is not None and (ts - last).total_seconds() > HOLD_GAP_INTERVALS * interval:
            self._holding_since[index] = ts
        since = self._holding_since.setdefault(index, ts)
        return (ts - since).total_seconds() >= for_s

    def _data(self, rule: EventRule, values: Mapping[str, float | str]) -> EventData:
        fields: dict[str, float | str] = {"point": rule.point}
        threshold = rule.when.above if rule.when.above is not None else rule.when.below
        if threshold is not None:
            fields["threshold"] = threshold
            fields["value"] = values[rule.point]
        fields.update({key: values[name] for key, name in rule.data.items() if name in values})
        return EventData(**{key: _coerce(key, value) for key, value in fields.items()})


def _restarted(seen: RawValue | str, counter: RawValue | str) -> bool:
    """Whether a record counter went from ``seen`` to ``counter`` by restarting its count.

    Only integer counters are judged; a decrease is a wrap (a new record) when it is a
    short step forward modulo 16 bits (32 for a counter above 65535).
    """
    if not isinstance(seen, int) or not isinstance(counter, int) or counter >= seen:
        return False
    modulus = 1 << 16 if seen <= 0xFFFF else 1 << 32
    return (counter - seen) % modulus > SEQUENCE_WRAP_WINDOW


def _field_type(annotation: Any) -> Any:
    """The type under ``X | None`` and ``Annotated[X, ...]`` (``count`` is a bounded int)."""
    inner = next(t for t in get_args(annotation) if t is not type(None))
    return get_args(inner)[0] if get_origin(inner) is Annotated else inner


_DATA_TYPES: dict[str, Any] = {
    f.name: _field_type(f.type) for f in msgspec.structs.fields(EventData)
}


def _coerce(key: str, value: float | str) -> Any:
    """Fit a point value to the event data field's type (a u32 card hash into a string).

    Raises nothing: a string that should be a number, or is not one of a field's
    literal values (a line crossing's ``direction``), becomes None rather than
    stopping the poll loop.
    """
    target = _DATA_TYPES[key]
    if get_origin(target) is Literal:
        text = str(value)
        return text if text in get_args(target) else None
    if target is str:
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)
    try:
        number = float(value)
    except ValueError:
        return None
    return int(number) if target is int else number
