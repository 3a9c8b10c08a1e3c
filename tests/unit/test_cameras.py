"""The gateway's camera section: zones named and armed, lines tied to their doors.

Events are built by hand with explicit timestamps; armed hours are judged in
Asia/Shanghai (UTC+8, no daylight saving), so 14:30 UTC is 22:30 there.
"""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from edge.app import Agent
from edge.cameras.settings import CameraSiteSettings
from edge.cameras.site import CameraSite
from edge.config import check_camera_kinds, parse_config
from edge.drivers.serial.checksums import xor8
from edge.drivers.serial.framing import Record, reader_for
from edge.drivers.serial.records import RecordPoints
from edge.errors import ConfigError
from edge.normalise import DeviceNormaliser
from schemas.profile import load_profiles
from schemas.protocols.serial import SerialSettings
from schemas.vocabulary import EVENT_SEVERITY, EventType
from schemas.wire import Event, EventBatch, EventData, decode

PROFILES = load_profiles(Path(__file__).resolve().parents[2] / "device_profiles")
CAMERA = "cam-gate-01"
SECTION: dict[str, Any] = {
    "devices": {
        CAMERA: {
            "zones": {"Z1": {"name": "rooftop"}, "Z2": {"name": "lobby", "armed": "22:00-06:00"}},
            "lines": {"L1": {"door": "gate-reader-01", "name": "gate"}, "L2": {"door": "door-2"}},
        }
    }
}


def shanghai(hour: int, minute: int = 0) -> datetime:
    """A moment at ``hour:minute`` in Shanghai on 30 November 2026, as UTC."""
    local = (hour - 8) % 24
    day = 30 if hour >= 8 else 29
    return datetime(2026, 11, day, local, minute, tzinfo=UTC)


def event(kind: EventType, ts: datetime | None = None, device: str = CAMERA, **data: Any) -> Event:
    return Event(
        device=device,
        ts=ts or shanghai(12),
        seq=1,
        type=kind,
        severity=EVENT_SEVERITY[kind],
        data=EventData(channel=1, **data),
    )


@pytest.fixture
def site() -> CameraSite:
    return CameraSite(CameraSiteSettings.model_validate(SECTION))


def test_a_zone_armed_always_is_named_and_sent_at_any_hour(site: CameraSite) -> None:
    sent = site.apply([event(EventType.CAMERA_INTRUSION, shanghai(12), zone="Z1")])
    assert [e.data.zone for e in sent] == ["rooftop"]
    assert sent[0].data.channel == 1
    assert site.disarmed == {}


@pytest.mark.parametrize(
    ("hour", "minute", "sent"),
    [(22, 0, True), (23, 30, True), (5, 59, True), (6, 0, False), (12, 0, False), (21, 59, False)],
)
@pytest.mark.parametrize("kind", [EventType.CAMERA_INTRUSION, EventType.CAMERA_LOITERING])
def test_a_zone_reports_only_in_its_armed_hours_across_midnight(
    site: CameraSite, kind: EventType, hour: int, minute: int, sent: bool
) -> None:
    kept = site.apply([event(kind, shanghai(hour, minute), zone="Z2")])
    assert [(e.type, e.data.zone) for e in kept] == ([(kind, "lobby")] if sent else [])
    assert site.disarmed == ({} if sent else {CAMERA: 1})


def test_disarmed_events_are_counted_per_device_and_the_rest_keep_their_order(
    site: CameraSite,
) -> None:
    other = event(EventType.CAMERA_INTRUSION, shanghai(12), device="cam-2", zone="Z2")
    batch = [
        event(EventType.CAMERA_INTRUSION, shanghai(12), zone="Z2"),
        event(EventType.CAMERA_TAMPER, shanghai(12)),
        event(EventType.CAMERA_LOITERING, shanghai(13), zone="Z2"),
        other,
        event(EventType.CAMERA_VIDEO_LOSS, shanghai(12)),
    ]
    kept = site.apply(batch)
    assert [e.type for e in kept] == [
        EventType.CAMERA_TAMPER,
        EventType.CAMERA_INTRUSION,
        EventType.CAMERA_VIDEO_LOSS,
    ]
    assert kept[1] is other
    assert site.disarmed == {CAMERA: 2}


def test_a_line_crossing_names_the_door_its_line_guards(site: CameraSite) -> None:
    (named, unnamed) = site.apply(
        [
            event(EventType.CAMERA_LINE_CROSSING, zone="L1", direction="in", count=2),
            event(EventType.CAMERA_LINE_CROSSING, zone="L2", direction="out", count=1),
        ]
    )
    assert named.data == EventData(
        channel=1, zone="gate", door="gate-reader-01", direction="in", count=2
    )
    assert (unnamed.data.zone, unnamed.data.door, unnamed.data.direction) == ("L2", "door-2", "out")


@pytest.mark.parametrize(
    "unconfigured",
    [
        event(EventType.CAMERA_INTRUSION, shanghai(12), zone="Z9"),
        event(EventType.CAMERA_LINE_CROSSING, zone="L9", count=1),
        event(EventType.CAMERA_LINE_CROSSING, zone="Z2", count=1),
        event(EventType.CAMERA_INTRUSION, shanghai(12), device="cam-2", zone="Z2"),
        event(EventType.CAMERA_INTRUSION, shanghai(12)),
        event(EventType.SMOKE_ALARM, shanghai(12), zone="Z2"),
    ],
    ids=["zone", "line", "zone-is-not-a-line", "device", "no-zone", "not-a-camera-event"],
)
def test_what_is_not_configured_passes_unchanged(site: CameraSite, unconfigured: Event) -> None:
    assert site.apply([unconfigured]) == [unconfigured]
    assert site.disarmed == {}


GATEWAY: dict[str, Any] = {
    "gateway": "gw-fh-01",
    "community": "xijin/fenghuang",
    "devices": [
        {"id": CAMERA, "profile": "anju-camera-serial", "address": "serial:///dev/ttyS1"},
        {"id": "gate-reader-01", "profile": "anju-door-mb", "address": "modbus-tcp://127.0.0.1:1"},
        {"id": "door-2", "profile": "anju-door-mb", "address": "modbus-tcp://127.0.0.1:2"},
    ],
}


def test_the_gateway_config_carries_the_section() -> None:
    config = parse_config({**GATEWAY, "cameras": SECTION}, "gateway.yaml")
    zones = config.cameras.devices[CAMERA].zones
    assert (zones["Z2"].name, zones["Z2"].armed, zones["Z1"].armed) == (
        "lobby",
        "22:00-06:00",
        "always",
    )
    assert str(config.cameras.zone) == "Asia/Shanghai"
    assert parse_config(GATEWAY, "gateway.yaml").cameras.devices == {}


def test_a_box_zone_written_as_a_bare_number_is_the_box_s_id() -> None:
    settings = CameraSiteSettings.model_validate(
        {"devices": {CAMERA: {"zones": {1: {"name": "car-park"}}}}}
    )
    assert list(settings.devices[CAMERA].zones) == ["1"]


@pytest.mark.parametrize(
    ("section", "key", "problem"),
    [
        ({"devices": {"cam-9": {}}}, "cameras.devices.cam-9", "no device 'cam-9' in devices"),
        (
            {"devices": {CAMERA: {"lines": {"L1": {"door": "gate-reader-1"}}}}},
            "cameras.devices.cam-gate-01.lines.L1.door",
            "no device 'gate-reader-1' in devices",
        ),
        (
            {"devices": {CAMERA: {"zones": {"Z1": {"name": "roof", "armed": "22-06"}}}}},
            "cameras.devices.cam-gate-01.zones.Z1.armed",
            "'22-06' is not 'always' or HH:MM-HH:MM",
        ),
        (
            {"devices": {CAMERA: {"zones": {"Z1": {"name": "roof", "armed": "06:00-06:00"}}}}},
            "cameras.devices.cam-gate-01.zones.Z1.armed",
            "is empty",
        ),
        (
            {"devices": {CAMERA: {"zones": {"Z1": {"name": "roof", "hours": "always"}}}}},
            "cameras.devices.cam-gate-01.zones.Z1.hours",
            "allowed keys here are name, armed",
        ),
        (
            {"devices": {CAMERA: {"lines": {"L1": {"name": "gate"}}}}},
            "cameras.devices.cam-gate-01.lines.L1.door",
            "Field required",
        ),
        (
            {"devices": {CAMERA: {"zone": {}}}},
            "cameras.devices.cam-gate-01.zone",
            "allowed keys here are zones, lines",
        ),
        ({"timezone": "Mars/Olympus"}, "cameras.timezone", "unknown time zone"),
        ({"armed": "always"}, "cameras.armed", "allowed keys here are timezone, devices"),
    ],
)
def test_a_bad_section_names_the_key_and_the_fix(
    section: dict[str, Any], key: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({**GATEWAY, "cameras": section}, "gateway.yaml")
    assert caught.value.key == key
    assert problem in caught.value.problem


@pytest.mark.parametrize(
    ("section", "key", "problem"),
    [
        (
            {"devices": {CAMERA: {"lines": {"L1": {"door": "cam-2"}}}}},
            "cameras.devices.cam-gate-01.lines.L1.door",
            "cam-2 is a camera device, not a door: name a door here",
        ),
        (
            {"devices": {"gate-reader-01": {"zones": {"Z1": {"name": "gate"}}}}},
            "cameras.devices.gate-reader-01",
            "gate-reader-01 is a door device, not a camera: name a camera here",
        ),
    ],
    ids=["line-door-is-a-camera", "camera-is-a-door"],
)
def test_the_section_names_cameras_and_doors_of_their_kinds(
    section: dict[str, Any], key: str, problem: str
) -> None:
    second = {"id": "cam-2", "profile": "anju-camera-jsonl", "address": "serial:///dev/ttyS2"}
    config = parse_config(
        {**GATEWAY, "devices": [*GATEWAY["devices"], second], "cameras": section}, "gateway.yaml"
    )
    with pytest.raises(ConfigError) as caught:
        check_camera_kinds(config, PROFILES, "gateway.yaml")
    assert (caught.value.path, caught.value.key, caught.value.problem) == (
        "gateway.yaml",
        key,
        problem,
    )


def test_the_agent_refuses_a_line_tied_to_a_camera_before_opening_any_port() -> None:
    section = {"devices": {CAMERA: {"lines": {"L1": {"door": CAMERA}}}}}
    config = parse_config({**GATEWAY, "cameras": section}, "gateway.yaml")
    with pytest.raises(ConfigError) as caught:
        Agent(config, PROFILES, source="gateway.yaml")
    assert caught.value.key == f"cameras.devices.{CAMERA}.lines.L1.door"


def test_kinds_are_checked_only_where_the_profile_is_known() -> None:
    config = parse_config({**GATEWAY, "cameras": SECTION}, "gateway.yaml")
    check_camera_kinds(config, PROFILES, "gateway.yaml")
    # A door whose profile is unknown is reported by the agent, as devices.N.profile.
    check_camera_kinds(config, {"anju-camera-serial": PROFILES["anju-camera-serial"]}, "g.yaml")


def nmea(body: str) -> bytes:
    return f"${body}*{xor8(body.encode()):02X}\r\n".encode()


@pytest.mark.parametrize(
    ("profile_id", "records"),
    [
        ("anju-camera-serial", [nmea("EVT,1,INTRUSION,01"), nmea("LINE,1,02,in,2")]),
        (
            "anju-camera-jsonl",
            [
                b'{"type":"alarm","ch":1,"kind":"intrusion","zone":"01"}\n',
                b'{"type":"cross","ch":1,"line":"02","dir":"in","n":2}\n',
            ],
        ),
    ],
)
def test_box_ids_with_leading_zeros_stay_themselves_from_the_wire_to_the_site(
    profile_id: str, records: list[bytes]
) -> None:
    profile = PROFILES[profile_id]
    settings = profile.settings_as(SerialSettings)
    assert settings is not None
    normaliser = DeviceNormaliser(CAMERA, profile)
    points = RecordPoints(profile)
    events = []
    for item in reader_for(settings).feed(b"".join(records)):
        assert isinstance(item, Record), item
        events += normaliser.normalise(points.sample(item), shanghai(12))[1]
    section = {
        "devices": {
            CAMERA: {
                "zones": {"01": {"name": "car-park"}},
                "lines": {"02": {"door": "gate-reader-01", "name": "gate"}},
            }
        }
    }
    site = CameraSite(parse_config({**GATEWAY, "cameras": section}, "gateway.yaml").cameras)
    assert [(e.type, e.data.zone, e.data.door) for e in site.apply(events)] == [
        (EventType.CAMERA_INTRUSION, "car-park", None),
        (EventType.CAMERA_LINE_CROSSING, "gate", "gate-reader-01"),
    ]


def test_the_agent_spools_camera_events_as_the_section_says(tmp_path: Path) -> None:
    config = parse_config(
        {
            **GATEWAY,
            "devices": [
                {**GATEWAY["devices"][0], "address": f"serial://{tmp_path}/ttyCAM"},
                *GATEWAY["devices"][1:],
            ],
            "state_dir": str(tmp_path / "state"),
            "broker": "mqtt://127.0.0.1:1",
            "cameras": SECTION,
        },
        "gateway.yaml",
    )
    agent = Agent(config, PROFILES)
    try:
        agent._accept(
            [],
            [
                event(EventType.CAMERA_INTRUSION, shanghai(12), zone="Z2"),
                event(EventType.CAMERA_LINE_CROSSING, zone="L1", direction="in", count=2),
            ],
        )
        agent.spool.flush()
        batch = agent.spool.take_nowait()
        assert batch is not None
        items = decode(batch.payload, EventBatch).items
    finally:
        agent.spool.close()
    assert [(e.type, e.data.door) for e in items] == [
        (EventType.CAMERA_LINE_CROSSING, "gate-reader-01")
    ]
    assert agent.cameras is not None
    assert agent.cameras.disarmed == {CAMERA: 1}
