"""What the fire linkage checks at start-up and how it tracks alarms per building.

Nothing here talks to a device: the doors sit on an in-memory bus; the releases
themselves are tested against simulated controllers in
tests/integration/test_fire_linkage.py.
"""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge.actions import DeviceActions
from edge.addresses import parse_address
from edge.config import DeviceConfig
from edge.errors import ConfigError
from edge.local_rules import FireLinkage
from edge.poller import PolledDevice
from schemas.profile import DeviceProfile, load_profile
from schemas.vocabulary import EventType, Severity
from schemas.wire import Event
from tests.memory_driver import MemoryBus

PROFILES = Path(__file__).resolve().parents[2] / "device_profiles"
SMOKE = load_profile(PROFILES / "smoke/anju-smoke-mb.yaml")
DOOR = load_profile(PROFILES / "door/anju-door-mb.yaml")
BY_ID = {SMOKE.id: SMOKE, DOOR.id: DOOR}


def device(
    device_id: str, profile: DeviceProfile, unit: int, building: str = "3", *, egress: bool = False
) -> DeviceConfig:
    return DeviceConfig(
        id=device_id,
        profile=profile.id,
        address=f"modbus-tcp://192.0.2.10:502?unit={unit}",
        building=building,
        egress=egress,
    )


SITE = [
    device("b3-smoke-1", SMOKE, 1),
    device("b3-smoke-2", SMOKE, 2),
    device("b3-door-1", DOOR, 3, egress=True),
    device("b4-smoke-1", SMOKE, 4, "4"),
    device("b4-door-1", DOOR, 5, "4", egress=True),
]


def linkage_for(configs: list[DeviceConfig]) -> FireLinkage:
    bus = MemoryBus()
    polled = {
        config.id: PolledDevice(
            config.id, BY_ID[config.profile], parse_address(config.address), 1.0
        )
        for config in configs
    }
    actions = DeviceActions({device_id: (bus, d) for device_id, d in polled.items()})
    normalisers = {device_id: d.normaliser for device_id, d in polled.items()}
    return FireLinkage(actions, configs, normalisers, emit=lambda events: None, source="gw.yaml")


def smoke(event_type: EventType, detector: str) -> Event:
    return Event(
        device=detector,
        ts=datetime(2026, 11, 28, 8, 0, tzinfo=UTC),
        seq=1,
        type=event_type,
        severity=Severity.CRITICAL,
    )


def test_alarms_are_tracked_per_building_until_the_last_detector_clears() -> None:
    linkage = linkage_for(SITE)
    linkage.observe([smoke(EventType.SMOKE_ALARM, "b3-smoke-1")])
    linkage.observe([smoke(EventType.SMOKE_ALARM, "b3-smoke-2")])
    assert linkage.buildings_in_alarm == ["3"]
    linkage.observe([smoke(EventType.SMOKE_CLEARED, "b3-smoke-1")])
    assert linkage.buildings_in_alarm == ["3"]
    linkage.observe([smoke(EventType.SMOKE_CLEARED, "b3-smoke-2")])
    assert linkage.buildings_in_alarm == []


def test_a_detector_going_offline_does_not_end_its_alarm() -> None:
    """A detector that burns stops answering; the fire is not over for that."""
    linkage = linkage_for(SITE)
    linkage.observe([smoke(EventType.SMOKE_ALARM, "b4-smoke-1")])
    linkage.observe([smoke(EventType.DEVICE_OFFLINE, "b4-smoke-1")])
    assert linkage.buildings_in_alarm == ["4"]


def test_clears_without_an_alarm_and_devices_without_a_building_are_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nowhere = device("loose-smoke", SMOKE, 9, building="")
    linkage = linkage_for([*SITE, nowhere])
    linkage.observe([smoke(EventType.SMOKE_CLEARED, "b3-smoke-1")])
    linkage.observe([smoke(EventType.SMOKE_ALARM, "loose-smoke")])
    linkage.observe([smoke(EventType.SMOKE_ALARM, "not-configured")])
    assert linkage.buildings_in_alarm == []
    assert "smoke.alarm at loose-smoke, which has no building" in caplog.text


def test_an_egress_door_needs_a_building() -> None:
    homeless = device("door-x", DOOR, 3, building="", egress=True)
    with pytest.raises(ConfigError, match=r"gw\.yaml: devices\.1\.egress: .*needs a building"):
        linkage_for([SITE[0], homeless])


def test_an_egress_device_needs_a_fire_release_action() -> None:
    not_a_door = device("b3-smoke-9", SMOKE, 9, egress=True)
    with pytest.raises(
        ConfigError, match=r"devices\.1\.egress: .*has no action fire_release.*egress: false"
    ):
        linkage_for([SITE[0], not_a_door])


def test_an_egress_door_must_be_one_the_gateway_polls() -> None:
    elsewhere = device("b3-door-9", DOOR, 9, egress=True)
    actions = DeviceActions({})
    with pytest.raises(ConfigError, match=r"devices\.0\.egress: b3-door-9: no such device"):
        FireLinkage(actions, [elsewhere], {}, emit=lambda events: None, source="gw.yaml")
