"""Device profiles: the shipped files load and make sense, broken files are named precisely.

An installer meets these messages when a new profile is wrong, so each case checks
that the message names the file, the field and the problem, not only that it fails.
"""

import copy
import json
import operator
import re
from collections.abc import Callable
from functools import reduce
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from anju.commands.profile import app
from schemas.errors import ProfileError
from schemas.profile import ActionName, DeviceProfile, ModbusTable, load_profile, load_profiles
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


def _write(directory: Path, name: str, document: Any) -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def _changed(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    document = copy.deepcopy(BASE)
    change(document)
    return document


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
    assert door.protocol is Protocol.MODBUS_RTU
    assert {p.metric for p in door.points} >= {Metric.DOOR_OPEN, Metric.DOOR_LOCKED}
    writable = {p.name for p in door.points if p.writable}
    assert writable == {"held_open_limit", "unlock_pulse"}
    tables = {point.modbus.table for point in door.points if point.writable and point.modbus}
    assert tables == {ModbusTable.HOLDING_REGISTER}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_polled_occurrence_rules_name_a_sequence(path: Path) -> None:
    """A polled device shows its last record at every poll; without a sequence each poll
    would raise the event again. Serial devices push each record once."""
    profile = load_profile(path)
    for rule in profile.events:
        if rule.mode == "occurrence" and profile.protocol is not Protocol.SERIAL:
            assert rule.sequence is not None, f"{path.name}: {rule.type} needs a sequence"


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_modbus_points_do_not_overlap(path: Path) -> None:
    """Two values sharing a register is a register-map typo, unless both are bits of it."""
    profile = load_profile(path)
    taken: dict[tuple[ModbusTable, int], str] = {}
    for point in profile.points:
        address = point.modbus
        if address is None or address.bit is not None:
            continue
        for register in range(address.address, address.address + address.type.registers):
            other = taken.setdefault((address.table, register), point.name)
            assert other == point.name, f"{point.name} overlaps {other} at {register}"


def test_camera_record_examples_have_correct_checksums() -> None:
    path = ROOT / "camera" / "anju-camera-serial.yaml"
    camera = load_profile(path)
    assert camera.serial is not None
    examples = re.findall(
        r"^#\s+\$([A-Z0-9]+)((?:,[^*]*)?)\*([0-9A-F]{2})$", path.read_text(), re.M
    )
    assert len(examples) >= 5
    for record, fields, checksum in examples:
        assert _checksum(record + fields) == checksum, f"${record}{fields}"
        assert len(fields.split(",")) - 1 == len(camera.serial.records[record])


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
        "(top level)",
        "points[4] (limit): a modbus-tcp profile addresses points with 'modbus' (found none)",
    ),
    (
        "wrong-address-family",
        lambda d: d["points"][4].update(
            ble={"service": "180f", "characteristic": "2a19", "access": "read", "decoder": "uint8"}
        ),
        "(top level)",
        "points[4] (limit): a modbus-tcp profile addresses points with 'modbus' "
        "(found ['modbus', 'ble'])",
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
        "Input should be 'modbus-rtu'",
    ),
    (
        "osdp-has-no-addressing",
        lambda d: d.update(protocol="osdp"),
        "(top level)",
        "protocol osdp has no point addressing yet",
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
