"""What a probe means by the profile: labels, resolution, values and events, any protocol.

The driver here is a stub that answers a probe from a dictionary: ``edge.inspection``
must give raw values their meaning from the profile alone, whatever read them.
"""

from collections.abc import Sequence
from typing import Any

from edge.addresses import DeviceAddress, parse_address
from edge.drivers.contract import (
    DeviceSpec,
    Driver,
    DriverOptions,
    PolledBus,
    Probe,
    ProbedPoint,
    RawRead,
    RawValue,
)
from edge.inspection import inspect_device, label_for, resolution_decimals
from schemas.profile import DeviceProfile

STATUS = {
    "name": "status",
    "modbus": {"table": "input_register", "address": 0},
    "labels": {0: "normal", 1: "alarm", 2: "fault", 4: "self-test", 8: "tamper"},
}
CODE = {
    "name": "code",
    "modbus": {"table": "input_register", "address": 1},
    "labels": {0: "none", 1: "granted", 2: "denied", 3: "exit button"},
}
PULSE = {
    "name": "pulse",
    "modbus": {"table": "holding_register", "address": 101},
    "labels": {0: "locked"},
}
BATTERY = {
    "name": "battery",
    "metric": "battery_pct",
    "modbus": {"table": "input_register", "address": 4},
}
THRESHOLD = {
    "name": "threshold",
    "modbus": {"table": "holding_register", "address": 100},
    "scale": 0.01,
    "writable": True,
}
OFFSET = {
    "name": "offset_temp",
    "metric": "temperature_c",
    "modbus": {"table": "holding_register", "address": 300, "type": "s16"},
    "scale": 0.1,
    "offset": -40,
}


def _profile(*points: dict[str, Any], events: Sequence[dict[str, Any]] = ()) -> DeviceProfile:
    return DeviceProfile.model_validate(
        {
            "id": "test-inspect-mb",
            "kind": "smoke",
            "protocol": "modbus-tcp",
            "manufacturer": "Test",
            "model": "T-1",
            "points": list(points),
            "events": list(events),
        }
    )


class AnsweringDriver(Driver):
    """Answers every probe with ``raw``, in reverse order, and remembers what was asked."""

    name = "stub"
    protocols = frozenset({"modbus-tcp"})

    def __init__(self, raw: dict[str, RawValue | str]) -> None:
        self.raw = raw
        self.asked: list[str] = []

    def open(
        self, address: DeviceAddress, devices: Sequence[DeviceSpec], options: DriverOptions
    ) -> PolledBus:
        raise NotImplementedError("only probed here")

    async def probe(self, device: DeviceSpec, options: DriverOptions) -> Probe:
        self.asked = [point.name for point in device.points]
        points = [
            ProbedPoint(name, value, f"slot {name}", repr(value))
            for name, value in reversed(self.raw.items())
        ]
        return Probe(tuple(points), (RawRead("all slots", "as stored", tuple(self.raw)),))


def test_labels_of_an_enumeration_and_of_a_bit_field() -> None:
    profile = _profile(STATUS, CODE, PULSE)
    status, code, pulse = (profile.point(n) for n in ("status", "code", "pulse"))
    assert label_for(status, 0) == "normal"
    assert label_for(status, 1) == "alarm"
    assert label_for(status, 0b1001) == "alarm, tamper"
    assert label_for(status, 0b10_0010) == "fault, unlabelled bits 0x20"
    assert label_for(code, 3) == "exit button"
    assert label_for(code, 7) is None, "an enumeration is not read as bits"
    assert label_for(pulse, 0) == "locked"
    assert label_for(pulse, 5) is None, "one label names a special value, not bits"
    assert label_for(status, 1.0) is None, "floats have no labels"
    assert label_for(status, "1") is None, "text has no labels"


def test_resolution_from_scale_and_offset() -> None:
    profile = _profile(BATTERY, THRESHOLD, OFFSET)
    assert resolution_decimals(profile.point("battery")) == 0
    assert resolution_decimals(profile.point("threshold")) == 2
    assert resolution_decimals(profile.point("offset_temp")) == 1


async def test_a_probe_gets_values_units_labels_and_events_from_the_profile() -> None:
    alarm = {"type": "smoke.alarm", "point": "status", "when": {"bit": 0}}
    profile = _profile(STATUS, BATTERY, THRESHOLD, OFFSET, events=[alarm])
    driver = AnsweringDriver({"status": 9, "battery": 88, "threshold": 350, "offset_temp": 655})
    address = parse_address("modbus-tcp://127.0.0.1:1502?unit=4")

    inspection = await inspect_device(driver, profile, address, DriverOptions())

    assert driver.asked == ["status", "battery", "threshold", "offset_temp"], "every point"
    assert (inspection.driver, inspection.address) == ("stub", str(address))
    points = {point.name: point for point in inspection.points}
    assert list(points) == ["status", "battery", "threshold", "offset_temp"], "profile order"
    assert points["status"].label == "alarm, tamper"
    assert (points["battery"].value, points["battery"].unit) == (88.0, "%")
    assert points["threshold"].value == 3.5, "350 x 0.01, rounded to its resolution"
    assert (points["offset_temp"].value, points["offset_temp"].unit) == (25.5, "°C")
    assert (points["offset_temp"].where, points["offset_temp"].raw_text) == (
        "slot offset_temp",
        "655",
    )
    assert points["threshold"].writable is True
    assert [event.type for event in inspection.events] == ["smoke.alarm"]
    assert inspection.requests[0].request == "all slots"


async def test_text_values_keep_their_text_and_raise_no_label() -> None:
    profile = _profile(STATUS)
    driver = AnsweringDriver({"status": "OK"})
    address = parse_address("modbus-tcp://127.0.0.1:1502")

    (point,) = (await inspect_device(driver, profile, address, DriverOptions())).points

    assert (point.raw, point.value, point.label) == ("OK", "OK", None)
