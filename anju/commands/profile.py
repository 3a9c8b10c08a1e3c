"""``anju profile``: list, show and validate the device profiles.

Installers write a profile when a new device model arrives and need to know, before
a gateway loads it, whether it is right; operators look one up to see which register
or characteristic a reading comes from. Loading and validation are schemas.profile's;
this module only finds the files and presents the results.
"""

import json
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from anju.commands.common import JsonOption, ProfilesOption, fail, profile_root
from schemas.errors import ProfileError
from schemas.profile import Condition, DeviceProfile, EventRule, Point, load_profile, load_profiles
from schemas.protocols.ble import BleAddress
from schemas.protocols.modbus import ModbusAddress
from schemas.protocols.serial import SerialAddress
from schemas.vocabulary import EVENT_SEVERITY, METRIC_UNITS

app = typer.Typer(
    help="Device profiles: one YAML file per device model.\n\n"
    "A profile says what kind of device a model is (door, camera, smoke, wearable), "
    "which protocol it speaks, where each value lives (Modbus register, BLE GATT "
    "characteristic, serial record field), which metric and unit it becomes, and "
    "which conditions raise events. Files live under <root>/<kind>/<id>.yaml; the "
    "file name must equal the profile id. Adding a device model on a known protocol "
    "takes a new profile, not new code.",
    epilog="Examples:\n"
    "  anju profile list\n"
    "  anju profile show anju-door-mb\n"
    "  anju profile validate device_profiles/door/my-new-door.yaml\n"
    "  anju profile validate --json      (every profile under the root)\n"
    "  ANJU_PROFILE_DIR=/srv/anju/profiles anju profile list\n\n"
    "The root is --profiles, else $ANJU_PROFILE_DIR, else the repository's "
    "device_profiles/.",
    no_args_is_help=True,
)


@app.command("list")
def list_profiles(profiles: ProfilesOption = None, as_json: JsonOption = False) -> None:
    """List every profile under the root: id, kind, protocol, model, point and event counts.

    Stops at the first broken file; anju profile validate reports them all.
    """
    root = profiles or profile_root()
    loaded = _load_all(root, as_json=as_json)
    rows = [
        {
            "id": profile.id,
            "kind": str(profile.kind),
            "protocol": str(profile.protocol),
            "manufacturer": profile.manufacturer,
            "model": profile.model,
            "points": len(profile.points),
            "events": len(profile.events),
            "file": str(root / profile.kind / f"{profile.id}.yaml"),
        }
        for profile in loaded.values()
    ]
    if as_json:
        typer.echo(json.dumps({"root": str(root), "profiles": rows}))
        return
    columns = ("id", "kind", "protocol", "model", "points", "events")
    table = Table(title=f"Device profiles in {escape(str(root))}")
    for column in columns:
        table.add_column(
            column,
            justify="right" if column in ("points", "events") else "left",
            no_wrap=True,
        )
    for row in rows:
        table.add_row(*(str(row[column]) for column in columns))
    Console().print(table)


@app.command("show")
def show_profile(
    profile_id: Annotated[str, typer.Argument(metavar="ID", help="Profile id, e.g. anju-door-mb.")],
    profiles: ProfilesOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one profile: its points with their addresses, metrics and scaling, and its rules."""
    root = profiles or profile_root()
    loaded = _load_all(root, as_json=as_json)
    profile = loaded.get(profile_id)
    if profile is None:
        known = ", ".join(sorted(loaded)) or "none"
        _fail(as_json, f"no profile {profile_id!r} under {root} (known: {known})")
    if as_json:
        typer.echo(json.dumps(profile.model_dump(mode="json")))
        return
    console = Console()
    maker = escape(f"{profile.manufacturer} {profile.model}")
    console.print(f"[bold]{escape(profile.id)}[/bold]  {maker}")
    if profile.description:
        console.print(profile.description.strip(), markup=False)
    console.print(
        f"kind {profile.kind}, protocol {profile.protocol}, poll every "
        f"{profile.poll_interval_s:g} s, unchanged values resent every {profile.heartbeat_s:g} s"
    )
    console.print(_points_table(profile))
    for line in _labels(profile):
        console.print(line, markup=False, highlight=False)
    if profile.events:
        console.print(_events_table(profile))


@app.command("validate")
def validate_profiles(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Profile files, or folders to search for *.yaml. "
            "Default: every profile under the root.",
            show_default=False,
        ),
    ] = None,
    profiles: ProfilesOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check profiles against the schema; print OK or "file: field: problem" for each.

    Without paths: every profile under the root, each in its kind's folder, ids unique.

    Exits 1 if any profile fails.
    """
    root = profiles or profile_root()
    files = _expand(paths) if paths else sorted(root.glob("*/*.yaml"))
    if not files:
        _fail(as_json, f"no profile files found under {root if not paths else 'the given paths'}")
    results: dict[Path, ProfileError | DeviceProfile] = {}
    for path in files:
        try:
            results[path] = load_profile(path)
        except ProfileError as exc:
            results[path] = exc
    if not paths and not any(isinstance(r, ProfileError) for r in results.values()):
        try:
            load_profiles(root)
        except ProfileError as exc:
            results[exc.path] = exc
    failed = sum(isinstance(r, ProfileError) for r in results.values())
    if as_json:
        report = [_result_json(path, result) for path, result in results.items()]
        typer.echo(json.dumps({"ok": failed == 0, "failed": failed, "files": report}))
    else:
        for path, result in results.items():
            typer.echo(str(result) if isinstance(result, ProfileError) else f"OK {path}")
        typer.echo(f"{len(results) - failed} valid, {failed} invalid")
    if failed:
        raise typer.Exit(1)


def _load_all(root: Path, *, as_json: bool) -> dict[str, DeviceProfile]:
    try:
        return load_profiles(root)
    except ProfileError as exc:
        _fail(as_json, f"{exc} (run `anju profile validate` to check every file)")


def _fail(as_json: bool, message: str) -> NoReturn:
    if as_json:
        typer.echo(json.dumps({"ok": False, "error": message}))
        raise typer.Exit(1)
    fail(message)


def _expand(paths: list[Path]) -> list[Path]:
    """Files as given; folders replaced by the *.yaml files anywhere below them."""
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(path.rglob("*.yaml")) if path.is_dir() else [path])
    return files


def _result_json(path: Path, result: ProfileError | DeviceProfile) -> dict[str, Any]:
    if isinstance(result, ProfileError):
        return {"file": str(path), "ok": False, "field": result.field, "problem": result.problem}
    return {"file": str(path), "ok": True, "id": result.id}


def _points_table(profile: DeviceProfile) -> Table:
    table = Table(title="Points")
    table.add_column("name", no_wrap=True)
    table.add_column("address", overflow="fold")
    table.add_column("metric (unit)")
    table.add_column("value")
    table.add_column("writable")
    for point in profile.points:
        table.add_row(
            point.name,
            _address(point),
            f"{point.metric} ({METRIC_UNITS[point.metric]})" if point.metric else "-",
            _scaling(point),
            "yes" if point.writable else "",
        )
    return table


def _labels(profile: DeviceProfile) -> list[str]:
    return [
        f"{point.name}: " + ", ".join(f"{raw}={meaning}" for raw, meaning in point.labels.items())
        for point in profile.points
        if point.labels
    ]


def _events_table(profile: DeviceProfile) -> Table:
    table = Table(title="Event rules")
    table.add_column("type", no_wrap=True)
    table.add_column("severity")
    table.add_column("when")
    table.add_column("mode")
    table.add_column("data", overflow="fold")
    for rule in profile.events:
        table.add_row(
            str(rule.type),
            str(EVENT_SEVERITY[rule.type]),
            f"{rule.point} {_condition(rule.when)}",
            _mode(rule),
            ", ".join(f"{field}={point}" for field, point in rule.data.items()),
        )
    return table


def _scaling(point: Point) -> str:
    """How a raw value becomes the reported one, and how far it must move to be sent."""
    parts = []
    if point.scale != 1.0:
        parts.append(f"raw x {point.scale:g}")
    if point.offset:
        parts.append(f"{point.offset:+g}")
    if point.deadband:
        parts.append(f"deadband {point.deadband:g}")
    return " ".join(parts)


def _address(point: Point) -> str:
    """A point's address the way a technician reads it off a register map or GATT table.

    Other families (OSDP, or one added later) are shown as their fields, so a new
    protocol's profiles can be shown without this command learning it first.
    """
    address = point.address
    if isinstance(address, ModbusAddress):
        return _modbus_address(address)
    if isinstance(address, BleAddress):
        return _ble_address(address)
    if isinstance(address, SerialAddress):
        return _serial_address(address)
    fields = ", ".join(
        f"{k}={v}" for k, v in address.model_dump(mode="json", exclude_none=True).items()
    )
    return f"{point.address_key} {fields}"


def _modbus_address(address: ModbusAddress) -> str:
    text = f"{address.table.code} {address.address}"
    if address.bit is not None:
        return f"{text} bit {address.bit}"
    if address.table.is_bit_table:
        return text
    text = f"{text} {address.type}"
    if address.type.registers > 1:
        text = f"{text} (to {address.address + address.type.registers - 1})"
    orders = [
        f"{name} {order}"
        for name, order in (("bytes", address.byte_order), ("words", address.word_order))
        if order != "big"
    ]
    return f"{text}, {', '.join(orders)}" if orders else text


def _ble_address(address: BleAddress) -> str:
    decoder = f"{address.decoder}.{address.field}" if address.field else str(address.decoder)
    return f"{address.service}/{address.characteristic} {address.access} {decoder}"


def _serial_address(address: SerialAddress) -> str:
    return f"{address.record} record, field {address.field}"


def _condition(when: Condition) -> str:
    if when.bit is not None:
        return f"bit {when.bit} set"
    if when.above is not None:
        return f"> {when.above:g}"
    if when.below is not None:
        return f"< {when.below:g}"
    return f"== {when.equals!r}"


def _mode(rule: EventRule) -> str:
    if rule.clear:
        return f"{rule.mode}, then {rule.clear}"
    if rule.sequence:
        return f"{rule.mode}, new when {rule.sequence} changes"
    return str(rule.mode)
