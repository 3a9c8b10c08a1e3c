"""Device profiles: the shipped files load and make sense, broken files are named precisely.

An installer meets these messages when a new profile is wrong, so each case checks
that the message names the file, the field and the problem, not only that it fails.
"""

import copy
import json
import operator
import re
from collections.abc import Callable, Iterator
from functools import reduce
from pathlib import Path
from typing import Annotated, Any

import jsonschema
import pytest
import yaml
from pydantic import BaseModel, ConfigDict, Field
from typer.testing import CliRunner

from anju.commands.profile import app
from schemas import addressing
from schemas.errors import ProfileError
from schemas.generate import profile_schema
from schemas.profile import ActionName, DeviceProfile, load_profile, load_profiles
from schemas.protocols.modbus import ModbusAddress, ModbusTable
from schemas.protocols.osdp import OsdpAddress
from schemas.protocols.serial import SerialAddress, SerialSettings
from schemas.vocabulary import DeviceKind, Metric, Protocol

ROOT = Path(__file__).resolve().parents[2] / "device_profiles"
SHIPPED = sorted(ROOT.glob("*/*.yaml"))

# A small valid profile; each broken case below changes one thing in a copy of it.
BASE: dict[str, Any] = {
    "id": "test-door",
    "kind": "door",
    "protocol": "modbus-tcp",
    "manufacturer": "Test",
    "model": "T-1",
    "points": [
        {"name": "status", "modbus": {"table": "input_register", "address": 0}},
        {
            "name": "door_open",
            "metric": "door.open",
            "modbus": {"table": "input_register", "address": 0, "type": "bool", "bit": 0},
        },
        {"name": "event_count", "modbus": {"table": "input_register", "address": 16}},
        {"name": "event_code", "modbus": {"table": "input_register", "address": 17}},
        {"name": "limit", "modbus": {"table": "holding_register", "address": 100}},
    ],
    "events": [
        {"type": "door.forced_open", "point": "status", "when": {"bit": 2}},
        {
            "type": "access.granted",
            "point": "event_code",
            "when": {"equals": 1},
            "mode": "occurrence",
            "sequence": "event_count",
        },
    ],
}


BATTERY = {"service": "180f", "characteristic": "2a19", "access": "read", "decoder": "uint8"}


def _write(directory: Path, name: str, document: Any) -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def _changed(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    document = copy.deepcopy(BASE)
    change(document)
    return document


def _readdressed(document: dict[str, Any], index: int, **address: object) -> None:
    """Point ``index`` of ``document`` addressed by ``address`` instead of by Modbus."""
    point = document["points"][index]
    del point["modbus"]
    point.update(address)


def _checksum(body: str) -> str:
    """NMEA-style XOR-8 of the bytes between '$' and '*', as two upper-case hex digits."""
    return f"{reduce(operator.xor, body.encode('ascii'), 0):02X}"


# --- shipped profiles -------------------------------------------------------------


def test_all_shipped_profiles_load() -> None:
    profiles = load_profiles(ROOT)
    assert {p.kind for p in profiles.values()} == set(DeviceKind)
    assert len(profiles) == len(SHIPPED)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_each_shipped_profile_loads_on_its_own(path: Path) -> None:
    profile = load_profile(path)
    assert profile.id == path.stem
    assert profile.kind == path.parent.name


def test_door_profile_reports_open_and_locked() -> None:
    door = load_profile(ROOT / "door" / "anju-door-mb.yaml")
    assert door.protocol == Protocol.MODBUS_RTU
    assert {p.metric for p in door.points} >= {Metric.DOOR_OPEN, Metric.DOOR_LOCKED}
    writable = {p.name for p in door.points if p.writable}
    assert writable == {"held_open_limit", "unlock_pulse"}
    tables = {point.address_as(ModbusAddress).table for point in door.points if point.writable}
    assert tables == {ModbusTable.HOLDING_REGISTER}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_polled_occurrence_rules_name_a_sequence(path: Path) -> None:
    """A polled device shows its last record at every poll; without a sequence each poll
    would raise the event again. Serial, OSDP and BLE devices push each record once."""
    profile = load_profile(path)
    for rule in profile.events:
        if rule.mode == "occurrence" and profile.protocol in (
            Protocol.MODBUS_RTU,
            Protocol.MODBUS_TCP,
        ):
            assert rule.sequence is not None, f"{path.name}: {rule.type} needs a sequence"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_modbus_points_do_not_overlap(path: Path) -> None:
    """Two values sharing a register is a register-map typo, unless both are bits of it."""
    profile = load_profile(path)
    taken: dict[tuple[ModbusTable, int], str] = {}
    for point in profile.points:
        address = point.address
        if not isinstance(address, ModbusAddress) or address.bit is not None:
            continue
        for register in range(address.address, address.address + address.type.registers):
            other = taken.setdefault((address.table, register), point.name)
            assert other == point.name, f"{point.name} overlaps {other} at {register}"


def test_camera_record_examples_have_correct_checksums() -> None:
    path = ROOT / "camera" / "anju-camera-serial.yaml"
    camera = load_profile(path)
    serial = camera.settings_as(SerialSettings)
    assert serial is not None
    examples = re.findall(
        r"^#\s+\$([A-Z0-9]+)((?:,[^*]*)?)\*([0-9A-F]{2})$", path.read_text(), re.M
    )
    assert len(examples) >= 5
    for record, fields, checksum in examples:
        assert _checksum(record + fields) == checksum, f"${record}{fields}"
        assert len(fields.split(",")) - 1 == len(serial.records[record])


# --- broken profiles --------------------------------------------------------------

BROKEN: list[tuple[str, Callable[[dict[str, Any]], object], str, str]] = [
    (
        "wrong-type",
        lambda d: d.update(poll_interval_s="fast"),
        "poll_interval_s",
        "Input should be a valid number",
    ),
    (
        "unknown-field",
        lambda d: d["points"][0].update(unit="C"),
        "points.0.unit",
        "Extra inputs are not permitted",
    ),
    (
        "missing-required",
        lambda d: d.pop("manufacturer"),
        "manufacturer",
        "Field required",
    ),
    (
        "missing-address",
        lambda d: d["points"][4].pop("modbus"),
        "points.4",
        "give exactly one address, one of ble, modbus, osdp, serial (found none)",
    ),
    (
        "two-addresses",
        lambda d: d["points"][4].update(ble=BATTERY),
        "points.4",
        "give exactly one address, one of ble, modbus, osdp, serial (found ble, modbus)",
    ),
    (
        "wrong-address-family",
        lambda d: _readdressed(d, 4, ble=BATTERY),
        "(top level)",
        "points[4] (limit): a modbus-tcp profile addresses points with 'modbus' (found 'ble')",
    ),
    (
        "error-in-another-family-address",
        lambda d: _readdressed(d, 4, ble=BATTERY | {"service": "x"}),
        "points.4.ble.service",
        "String should match pattern",
    ),
    (
        "settings-of-another-family",
        lambda d: d.update(serial={"records": {"PCNT": ["count"]}}),
        "serial",
        "a modbus-tcp profile has no 'serial' section; its settings go under 'modbus'",
    ),
    (
        "bad-settings-field",
        lambda d: d.update(modbus={"max_gap": 126}),
        "modbus.max_gap",
        "Input should be less than or equal to 125",
    ),
    (
        "required-settings-missing",
        lambda d: d.update(protocol="serial"),
        "serial",
        "Field required",
    ),
    (
        "rule-point-missing",
        lambda d: d["events"][0].update(point="alarm_word"),
        "(top level)",
        "events[0] (door.forced_open): no point named 'alarm_word'",
    ),
    (
        "rule-data-point-missing",
        lambda d: d["events"][1].update(data={"card_hash": "card"}),
        "(top level)",
        "events[1] (access.granted): no point named 'card'",
    ),
    (
        "rule-sequence-point-missing",
        lambda d: d["events"][1].update(sequence="counter"),
        "(top level)",
        "events[1] (access.granted): no point named 'counter'",
    ),
    (
        "rule-data-field-unknown",
        lambda d: d["events"][0].update(data={"colour": "status"}),
        "(top level)",
        "events[0] (door.forced_open): data has no field ['colour']",
    ),
    (
        "duplicate-point",
        lambda d: d["points"].append(copy.deepcopy(d["points"][0])),
        "(top level)",
        "points[5]: duplicate point name 'status'",
    ),
    (
        "bool-register-without-bit",
        lambda d: d["points"][4]["modbus"].update(type="bool"),
        "points.4.modbus",
        "a bool in a register table needs 'bit' (0-15)",
    ),
    (
        "coil-not-bool",
        lambda d: d["points"][4]["modbus"].update(table="coil"),
        "points.4.modbus",
        "a coil point holds one bit: type must be bool",
    ),
    (
        "bit-of-u32",
        lambda d: d["points"][0]["modbus"].update(type="u32", bit=3),
        "points.0.modbus",
        "'bit' applies to a u16 register read as bool",
    ),
    (
        "address-out-of-range",
        lambda d: d["points"][4]["modbus"].update(address=70000),
        "points.4.modbus.address",
        "Input should be less than or equal to 65535",
    ),
    (
        "zero-scale",
        lambda d: d["points"][1].update(scale=0),
        "points.1.scale",
        "scale must not be 0",
    ),
    (
        "unknown-event-type",
        lambda d: d["events"][0].update(type="door.opened"),
        "events.0.type",
        "Input should be 'smoke.alarm'",
    ),
    (
        "unknown-metric",
        lambda d: d["points"][1].update(metric="door.ajar"),
        "points.1.metric",
        "Input should be 'smoke.obscuration_pct_per_m'",
    ),
    (
        "two-conditions",
        lambda d: d["events"][0]["when"].update(above=3),
        "events.0.when",
        "give exactly one of bit, above, below, equals (found bit, above)",
    ),
    (
        "clear-on-occurrence",
        lambda d: d["events"][1].update(clear="door.closed"),
        "events.1",
        "'clear' applies to level rules only",
    ),
    (
        "sequence-on-level",
        lambda d: d["events"][0].update(sequence="event_count"),
        "events.0",
        "'sequence' applies to occurrence rules only",
    ),
    (
        "unknown-protocol",
        lambda d: d.update(protocol="zigbee"),
        "protocol",
        "protocol 'zigbee' has no point addressing; known: ble, modbus-rtu, modbus-tcp, osdp, "
        "serial",
    ),
    (
        "points-of-another-protocol",
        lambda d: d.update(protocol="osdp"),
        "(top level)",
        "points[0] (status): a osdp profile addresses points with 'osdp' (found 'modbus')",
    ),
    (
        "serial-field-not-in-records",
        lambda d: d.update(
            protocol="serial",
            serial={"records": {"EVT": ["code"]}},
            points=[{"name": "code", "serial": {"record": "EVT", "field": "zone"}}],
            events=[],
        ),
        "(top level)",
        "points[0] (code): record EVT has no field 'zone' in serial.records",
    ),
    (
        "osdp-input-without-index",
        lambda d: d.update(
            protocol="osdp", points=[{"name": "door", "osdp": {"reply": "input_status"}}], events=[]
        ),
        "points.0.osdp",
        "reply input_status needs 'index', the input or output number",
    ),
    (
        "bad-id",
        lambda d: d.update(id="Test_Door"),
        "id",
        "String should match pattern",
    ),
]


@pytest.mark.parametrize(("case", "change", "field", "problem"), BROKEN, ids=[c[0] for c in BROKEN])
def test_broken_profile_is_named_precisely(
    tmp_path: Path,
    case: str,
    change: Callable[[dict[str, Any]], object],
    field: str,
    problem: str,
) -> None:
    document = _changed(change)
    path = _write(tmp_path, f"{document['id']}.yaml", document)

    with pytest.raises(ProfileError) as caught:
        load_profile(path)

    error = caught.value
    assert error.path == path
    assert error.field == field
    assert problem in error.problem
    assert str(error).startswith(f"{path}: {field}: ")


def test_base_profile_of_the_broken_cases_is_valid(tmp_path: Path) -> None:
    assert load_profile(_write(tmp_path, "test-door.yaml", BASE)).id == "test-door"


def test_yaml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "test-door.yaml"
    path.write_text("id: test-door\npoints: [\n  {name: a\nkind: door\n", encoding="utf-8")
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    assert re.fullmatch(r"line \d+, column \d+", caught.value.field)
    assert caught.value.problem.startswith("not valid YAML: ")
    assert str(caught.value).startswith(f"{path}: line ")


def test_non_mapping_document(tmp_path: Path) -> None:
    path = _write(tmp_path, "test-door.yaml", [BASE])
    with pytest.raises(ProfileError, match="expected a mapping of profile fields") as caught:
        load_profile(path)
    assert caught.value.field == "(top level)"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ProfileError, match="cannot read: No such file or directory") as caught:
        load_profile(tmp_path / "absent.yaml")
    assert caught.value.field == "(file)"


def test_id_must_match_file_name(tmp_path: Path) -> None:
    path = _write(tmp_path, "door-v2.yaml", BASE)
    with pytest.raises(ProfileError) as caught:
        load_profile(path)
    assert str(caught.value) == f"{path}: id: id 'test-door' must match the file name 'door-v2'"


def test_profile_in_the_wrong_kind_folder(tmp_path: Path) -> None:
    (tmp_path / "smoke").mkdir()
    path = _write(tmp_path / "smoke", "test-door.yaml", BASE)
    with pytest.raises(ProfileError) as caught:
        load_profiles(tmp_path)
    assert str(caught.value) == f"{path}: kind: a door profile belongs in door/"


def test_two_profiles_with_one_id(tmp_path: Path) -> None:
    for kind in ("door", "smoke"):
        (tmp_path / kind).mkdir()
        _write(tmp_path / kind, "test-door.yaml", BASE | {"kind": kind})
    with pytest.raises(ProfileError, match="id 'test-door' is used by another profile") as caught:
        load_profiles(tmp_path)
    assert caught.value.path == tmp_path / "smoke" / "test-door.yaml"


# --- command line -----------------------------------------------------------------

runner = CliRunner()


def test_cli_validate_reports_a_broken_file_and_exits_1(tmp_path: Path) -> None:
    good = _write(tmp_path, "test-door.yaml", BASE)
    bad_document = _changed(lambda d: d["points"][4]["modbus"].update(type="bool"))
    bad = _write(tmp_path, "test-door-bad.yaml", bad_document | {"id": "test-door-bad"})

    result = runner.invoke(app, ["validate", str(good), str(bad)])

    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0] == f"OK {good}"
    assert lines[1] == (
        f"{bad}: points.4.modbus: Value error, a bool in a register table needs 'bit' (0-15)"
    )
    assert lines[2] == "1 valid, 1 invalid"


def test_cli_validate_json(tmp_path: Path) -> None:
    (tmp_path / "door").mkdir()
    _write(tmp_path / "door", "test-door.yaml", BASE | {"id": "wrong-name"})

    result = runner.invoke(app, ["validate", "--profiles", str(tmp_path), "--json"])

    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert report["failed"] == 1
    assert report["files"] == [
        {
            "file": str(tmp_path / "door" / "test-door.yaml"),
            "ok": False,
            "field": "id",
            "problem": "id 'wrong-name' must match the file name 'test-door'",
        }
    ]


def test_cli_validate_checks_folders_of_the_whole_root(tmp_path: Path) -> None:
    (tmp_path / "smoke").mkdir()
    path = _write(tmp_path / "smoke", "test-door.yaml", BASE)

    result = runner.invoke(app, ["validate", "--profiles", str(tmp_path)])

    assert result.exit_code == 1
    assert f"{path}: kind: a door profile belongs in door/" in result.stdout


def test_cli_validate_shipped_profiles() -> None:
    result = runner.invoke(app, ["validate", "--profiles", str(ROOT)])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == f"{len(SHIPPED)} valid, 0 invalid"


def test_cli_validate_empty_root(tmp_path: Path) -> None:
    result = runner.invoke(app, ["validate", "--profiles", str(tmp_path)])
    assert result.exit_code == 1
    assert "no profile files found" in result.stderr


def test_cli_list_json() -> None:
    result = runner.invoke(app, ["list", "--profiles", str(ROOT), "--json"])
    assert result.exit_code == 0, result.output
    listing = json.loads(result.stdout)
    door = next(p for p in listing["profiles"] if p["id"] == "anju-door-mb")
    assert door["kind"] == "door"
    assert door["protocol"] == "modbus-rtu"
    assert {p["id"] for p in listing["profiles"]} == {p.stem for p in SHIPPED}


def test_cli_list_stops_at_a_broken_profile(tmp_path: Path) -> None:
    (tmp_path / "door").mkdir()
    _write(tmp_path / "door", "test-door.yaml", _changed(lambda d: d.pop("model")))
    result = runner.invoke(app, ["list", "--profiles", str(tmp_path), "--json"])
    assert result.exit_code == 1
    assert "model: Field required" in json.loads(result.stdout)["error"]


def test_cli_show_text_and_json() -> None:
    text = runner.invoke(app, ["show", "anju-door-mb", "--profiles", str(ROOT)])
    assert text.exit_code == 0, text.output
    assert "door_open" in text.stdout
    assert "IR 0 bit 0" in text.stdout
    assert "HR 101 u16" in text.stdout
    assert "door.forced_open" in text.stdout

    as_json = runner.invoke(app, ["show", "anju-door-mb", "--profiles", str(ROOT), "--json"])
    assert as_json.exit_code == 0
    shown = DeviceProfile.model_validate(json.loads(as_json.stdout))
    assert shown == load_profile(ROOT / "door" / "anju-door-mb.yaml")


def test_cli_show_unknown_id() -> None:
    result = runner.invoke(app, ["show", "anju-lift-mb", "--profiles", str(ROOT)])
    assert result.exit_code == 1
    assert "no profile 'anju-lift-mb'" in result.stderr
    assert "anju-door-mb" in result.stderr


def test_cli_root_defaults_to_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "door").mkdir()
    _write(tmp_path / "door", "test-door.yaml", BASE)
    monkeypatch.setenv("ANJU_PROFILE_DIR", str(tmp_path))

    result = runner.invoke(app, ["list", "--json"])

    assert result.exit_code == 0, result.output
    assert [p["id"] for p in json.loads(result.stdout)["profiles"]] == ["test-door"]


def test_two_points_with_one_metric_are_refused(tmp_path: Path) -> None:
    text = (ROOT / "smoke" / "anju-smoke-mb.yaml").read_text()
    broken = text.replace(
        "  - name: co\n    metric: co_ppm", "  - name: co\n    metric: temperature_c"
    )
    assert broken != text
    path = tmp_path / "anju-smoke-mb.yaml"
    path.write_text(broken)
    with pytest.raises(
        ProfileError, match="metric temperature_c is already reported by 'temperature'"
    ):
        load_profile(path)


def test_shipped_actions_write_writable_points() -> None:
    profiles = load_profiles(ROOT)
    door = profiles["anju-door-mb"].actions
    assert {str(name) for name in door} == {"unlock", "relock", "fire_release"}
    assert door[ActionName.FIRE_RELEASE].repeat_s == 120
    assert profiles["anju-smoke-mb"].actions[ActionName.RESET_ALARM].point == "alarm_reset"


def test_action_on_a_read_only_point_is_refused(tmp_path: Path) -> None:
    text = (ROOT / "smoke" / "anju-smoke-mb.yaml").read_text()
    broken = text.replace("reset_alarm: {point: alarm_reset", "reset_alarm: {point: battery")
    path = tmp_path / "anju-smoke-mb.yaml"
    path.write_text(broken)
    expected = r"actions\.reset_alarm: point 'battery' is not writable"
    with pytest.raises(ProfileError, match=expected):
        load_profile(path)


# --- addressing families ------------------------------------------------------------


class ToyAddress(BaseModel):
    """A protocol invented here: a point is a channel number."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    channel: Annotated[int, Field(ge=1, le=8)]


class ToySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    channels: Annotated[int, Field(ge=1, le=8)] = 8


def _channels_exist(profile: DeviceProfile) -> None:
    settings = profile.settings_as(ToySettings) or ToySettings()
    for index, point in enumerate(profile.points):
        if point.address_as(ToyAddress).channel > settings.channels:
            raise ValueError(f"points[{index}] ({point.name}): no such channel")


TOY: dict[str, Any] = {
    "id": "test-toy",
    "kind": "smoke",
    "protocol": "toy-bus",
    "manufacturer": "Test",
    "model": "T-0",
    "toy": {"channels": 2},
    "points": [
        {"name": "obscuration", "metric": "smoke.obscuration_pct_per_m", "toy": {"channel": 1}},
        {"name": "temperature", "metric": "temperature_c", "scale": 0.1, "toy": {"channel": 2}},
    ],
}


@pytest.fixture
def toy() -> Iterator[None]:
    """The toy protocol registered for one test, the way a protocol's module registers."""
    addressing.register(
        addressing.Addressing(
            key="toy",
            protocols=frozenset({"toy-bus"}),
            point=ToyAddress,
            settings=ToySettings,
            check=_channels_exist,
        )
    )
    yield
    addressing.unregister("toy")


@pytest.mark.usefixtures("toy")
def test_a_new_protocol_plugs_in_without_editing_the_profile_model(tmp_path: Path) -> None:
    profile = load_profile(_write(tmp_path, "test-toy.yaml", TOY))

    assert profile.protocol == "toy-bus"
    assert [point.address_key for point in profile.points] == ["toy", "toy"]
    assert profile.point("temperature").address_as(ToyAddress) == ToyAddress(channel=2)
    assert profile.settings_as(ToySettings) == ToySettings(channels=2)
    dumped = profile.model_dump(mode="json")
    assert dumped["toy"] == {"channels": 2}
    assert dumped["points"][1]["toy"] == {"channel": 2}
    assert DeviceProfile.model_validate(dumped) == profile


@pytest.mark.usefixtures("toy")
@pytest.mark.parametrize(
    ("change", "field", "problem"),
    [
        pytest.param(
            lambda d: d["points"][1]["toy"].update(channel=9),
            "points.1.toy.channel",
            "Input should be less than or equal to 8",
            id="address-field",
        ),
        pytest.param(
            lambda d: d["toy"].update(channels=1),
            "(top level)",
            "points[1] (temperature): no such channel",
            id="family-check",
        ),
        pytest.param(
            lambda d: d["points"][0].update(toy={"channel": 1}, modbus={"table": "coil"}),
            "points.0",
            "give exactly one address, one of ble, modbus, osdp, serial, toy (found modbus, toy)",
            id="two-addresses",
        ),
        pytest.param(
            lambda d: d.update(ble={}),
            "ble",
            "a toy-bus profile has no 'ble' section; its settings go under 'toy'",
            id="settings-of-another-family",
        ),
    ],
)
def test_a_new_protocol_names_the_field_in_errors(
    tmp_path: Path, change: Callable[[dict[str, Any]], object], field: str, problem: str
) -> None:
    document = copy.deepcopy(TOY)
    change(document)
    with pytest.raises(ProfileError) as caught:
        load_profile(_write(tmp_path, "test-toy.yaml", document))
    assert caught.value.field == field
    assert problem in caught.value.problem


@pytest.mark.usefixtures("toy")
def test_a_new_protocol_is_in_the_json_schema_and_the_cli(tmp_path: Path) -> None:
    schema = profile_schema()
    jsonschema.Draft202012Validator(schema).validate(TOY)
    wrong = copy.deepcopy(TOY)
    wrong["points"][0] = {"name": "obscuration", "ble": BATTERY}
    assert not jsonschema.Draft202012Validator(schema).is_valid(wrong)

    (tmp_path / "smoke").mkdir()
    _write(tmp_path / "smoke", "test-toy.yaml", TOY)
    shown = runner.invoke(app, ["show", "test-toy", "--profiles", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    assert "toy channel=2" in shown.stdout


def test_an_unregistered_protocol_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ProfileError) as caught:
        load_profile(_write(tmp_path, "test-toy.yaml", TOY))
    assert caught.value.field == "protocol"
    assert "protocol 'toy-bus' has no point addressing" in caught.value.problem


def test_register_refuses_a_taken_key_or_protocol() -> None:
    with pytest.raises(ValueError, match="addressing key 'modbus' is already registered"):
        addressing.register(
            addressing.Addressing(key="modbus", protocols=frozenset({"toy-bus"}), point=ToyAddress)
        )
    with pytest.raises(ValueError, match="protocol 'serial' is already addressed by 'serial'"):
        addressing.register(
            addressing.Addressing(
                key="toy", protocols=frozenset({"toy-bus", "serial"}), point=ToyAddress
            )
        )
    assert "toy" not in {family.key for family in addressing.families()}
    with pytest.raises(ValueError, match=r"known: ble, modbus-rtu, modbus-tcp, osdp, serial$"):
        addressing.for_protocol("toy-bus")


def test_asking_for_another_family_names_the_point_or_profile() -> None:
    door = load_profile(ROOT / "door" / "anju-door-mb.yaml")
    with pytest.raises(
        ValueError, match="point 'status' has a 'modbus' address, not a SerialAddress"
    ):
        door.point("status").address_as(SerialAddress)
    with pytest.raises(ValueError, match="anju-door-mb speaks modbus-rtu, whose settings are not"):
        door.settings_as(SerialSettings)


def test_osdp_profile_loads(tmp_path: Path) -> None:
    document = {
        "id": "test-reader",
        "kind": "door",
        "protocol": "osdp",
        "manufacturer": "Test",
        "model": "R-1",
        "points": [
            {"name": "card", "osdp": {"reply": "card_read"}},
            {
                "name": "door_open",
                "metric": "door.open",
                "osdp": {"reply": "input_status", "index": 0},
            },
        ],
        "events": [{"type": "door.forced_open", "point": "door_open", "when": {"equals": 1}}],
    }
    reader = load_profile(_write(tmp_path, "test-reader.yaml", document))
    assert reader.point("door_open").address_as(OsdpAddress) == OsdpAddress(
        reply="input_status", index=0
    )
    assert reader.settings is None
